"""Sequential selection (batch size 1): one item at a time, a warm-started refit per label.

PRepAL (arXiv 2402.15613) found that labeling one item at a time and refitting after each
label helps while labels are few. A `SequentialSession` is the state of one such stream:
it is created from a Query (its k is ignored: always 1) and the loaded version, returns
the first item, then answers every label with the next item. It lives only as long as
its stream; the proxy keeps nothing across calls.

What makes a step cheap at 100K x 384 (see bench/sequential.py for where the time goes):

- The candidates are fixed once, at the start (the version's unlabeled ids narrowed by the
  request's candidate ids, shard and UPS subsample, as in `selection.select`); a boolean
  mask over them tracks which are still unlabeled, so a step never recomputes the
  candidate set or touches a vector outside the scoring pass.
- Logistic regression refits warm (lbfgs from the previous weights, same seen classes;
  see `classifiers.refit`); other kinds, and the first fit after a new class appears,
  refit cold. The labeled vectors gathered per fit are n x d, tiny next to the pool.
  At tens of labels a refit takes ~8 ms warm or cold (lbfgs runs ~15 iterations either
  way), so the warm start buys continuity more than speed.
- The one pass over the pool is the strategy's own: for logistic regression with least
  confidence, margin or entropy the scoring kernel (`kernel.scan`, on the service's score
  threads, over a float16 matrix when the version is held so, its survivors re-scored from
  float32 rows), else chunked scoring (`Pool.map_rows`). That pass is most of a step: at
  1M x 384 it is a read of the whole matrix (see bench/sequential.py).
- The labelled rows' float32 vectors are kept by the session and grow by one row per label
  (read by id when the matrix is float16), so a refit never gathers them again.

Each step picks exactly what `selection.select` with k = 1 would pick for the same labels
and model; only the model differs (warm-started rather than fitted from zeros), and it
converges to the same optimum up to lbfgs's tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from proxal.proxy_service.cache import LoadedVersion
from proxal.proxy_service.classifiers import ProxyClassifier, refit
from proxal.proxy_service.selection import Loader, Query, Timings, candidate_rows, check_query
from proxal.proxy_service.strategies import (
    Pool,
    Strategy,
    fallback_for,
)
from proxal.runtime.deadline import Deadline
from proxal.runtime.errors import InvalidArgumentError


@dataclass(frozen=True)
class Step:
    """One item to label next, with its score and how it was chosen.

    ``labels`` is the number of labels the step was chosen with (those the model was
    fitted on, for model strategies); ``latency_s`` the seconds from the label's arrival
    (or the start) to this step; ``warm_started`` whether the refit started from the
    previous model.
    """

    id: int
    score: float
    strategy_used: str
    fallback_reason: str
    timings: Timings
    labels: int
    latency_s: float
    warm_started: bool


class SequentialSession:
    """The state of one sequential stream over one loaded version (not thread-safe).

    Use `start` to validate, load and get the first item; then `label` per answer. With
    ``warm_start=False`` every refit is cold (the baseline the benchmark compares with).
    """

    def __init__(
        self,
        version: LoadedVersion,
        query: Query,
        threads: int = 1,
        warm_start: bool = True,
    ):
        self.strategy, self.spec, self.mc_samples = check_query(query, check_k=False)
        self.version = version
        self.seed = query.seed
        self.initial = query.initial  # the fallback's choice; class_balanced needs k > 1
        self.num_classes = query.training.num_classes
        self.threads = threads
        self.warm_start = warm_start
        train_rows = version.rows(query.training.ids, "training ids")
        rows = candidate_rows(version, train_rows, query.candidate_ids, query.shard)
        if query.subsampling is not None:
            rows = rows[query.subsampling.keep(version.ids[rows], query.seed)]
        if not len(rows):
            raise InvalidArgumentError(
                "no candidates are left once labeled ids (and the candidate ids, shard and "
                "subsampling of the request) are applied; there is nothing to select"
            )
        self._rows = rows  # (m,) ascending, fixed for the stream
        self._ids = version.ids[rows]  # (m,)
        self._unlabeled = np.ones(len(rows), dtype=bool)  # (m,) still selectable
        self._remaining = len(rows)
        self._labeled = np.zeros(len(version.ids), dtype=bool)  # (N,) over the version
        self._labeled[train_rows] = True
        self._train_rows: npt.NDArray[np.intp] = np.asarray(train_rows, dtype=np.intp)
        self._train_x = version.exact(self._train_rows)  # (n, d) float32, grows by a row
        self._labels: npt.NDArray[np.int32] = np.asarray(query.training.labels, dtype=np.int32)
        self._model: ProxyClassifier | None = None
        self.last_id: int | None = None

    @classmethod
    def start(
        cls,
        load: Loader,
        query: Query,
        deadline: Deadline | None = None,
        threads: int = 1,
        warm_start: bool = True,
    ) -> tuple[SequentialSession, Step]:
        """Validate the query, load the version, and choose the first item."""
        arrived = time.perf_counter()
        check_query(query, check_k=False)  # fail fast, before loading anything
        version = load()
        session = cls(version, query, threads, warm_start)
        load_s = time.perf_counter() - arrived
        (deadline or Deadline()).check("loading the version")
        return session, session._next(arrived, load_s, deadline)

    @property
    def remaining(self) -> int:
        """Candidates not labeled yet."""
        return self._remaining

    @property
    def model(self) -> ProxyClassifier | None:
        """The model the last step was chosen with (None before the first fit)."""
        return self._model

    @property
    def labeled_ids(self) -> npt.NDArray[np.int64]:
        """Every labeled id so far (n,), in labeling order."""
        return self.version.ids[self._train_rows]

    def label(self, item_id: int, label: int, deadline: Deadline | None = None) -> Step | None:
        """Record `label` for `item_id` and choose the next item; None once none is left.

        The label normally answers the item returned last; one for any other unlabeled id
        of the version is accepted too (that item then leaves the candidates, and the last
        item stays one). Raises InvalidArgumentError for a label outside [0, num_classes)
        or an id labeled already, NotFoundError for an id not in the version.
        """
        arrived = time.perf_counter()
        if not 0 <= label < self.num_classes:
            raise InvalidArgumentError(
                f"label for id {item_id} must be in [0, {self.num_classes}), got {label}"
            )
        row = int(self.version.rows(np.array([item_id], dtype=np.int64), "label.id")[0])
        if self._labeled[row]:
            raise InvalidArgumentError(
                f"id {item_id} is labeled already in this stream; label each id once "
                f"(the item to label now is {self.last_id})"
            )
        self._labeled[row] = True
        self._train_rows = np.append(self._train_rows, row)
        self._train_x = np.vstack([self._train_x, self.version.exact(np.array([row]))])
        self._labels = np.append(self._labels, np.int32(label))
        pos = int(np.searchsorted(self._rows, row))
        if pos < len(self._rows) and self._rows[pos] == row:
            self._unlabeled[pos] = False
            self._remaining -= 1
        if not self._remaining:
            self.last_id = None
            return None
        return self._next(arrived, 0.0, deadline)

    def _fit(self, chosen: Strategy) -> tuple[ProxyClassifier | None, bool]:
        """(the model for this step or None if `chosen` needs none, whether it warm-started)."""
        if not chosen.needs_model:
            return None, False
        previous = self._model if self.warm_start else None
        model = refit(
            previous,
            self.spec,
            self.seed,
            self._train_x,
            self._labels,
            self.num_classes,
        )
        self._model = model
        return model, bool(getattr(model, "warm_started_", False))

    def _next(self, arrived: float, load_s: float, deadline: Deadline | None) -> Step:
        """Refit on the labels so far and choose the best still-unlabeled candidate."""
        deadline = deadline or Deadline()
        begun = time.perf_counter()
        chosen = self.strategy
        fallback_reason = chosen.unusable_reason(self._labels)
        if fallback_reason:
            chosen = fallback_for(chosen, self.initial)
            fallback_reason += f"; selected with {chosen.name} instead"
        model, warm = self._fit(chosen)
        deadline.check("fitting the proxy")
        fitted = time.perf_counter()

        positions = np.flatnonzero(self._unlabeled)
        pool = Pool(
            vectors=self.version.vectors,
            rows=self._rows[positions],
            ids=self._ids[positions],
            train_rows=self._train_rows,
            labels=self._labels,
            num_classes=self.num_classes,
            model=model,
            seed=self.seed,
            mc_samples=self.mc_samples,
            threads=self.threads,
            deadline=deadline,
            keep_scores=False,
            norms=self.version.norms,
            exact_rows=self.version.exact,
        )
        picked = chosen.select(pool, 1)
        deadline.check("scoring and selecting")
        best = int(positions[picked.positions[0]])
        self.last_id = int(self._ids[best])
        done = time.perf_counter()
        return Step(
            id=self.last_id,
            score=float(picked.scores[0]),
            strategy_used=chosen.name,
            fallback_reason=fallback_reason,
            timings=Timings(
                load_s=load_s,
                fit_s=fitted - begun,
                score_s=done - fitted - picked.select_s,
                select_s=picked.select_s,
            ),
            labels=len(self._labels),
            latency_s=done - arrived,
            warm_started=warm,
        )
