"""The proxy's domain logic, free of gRPC: fit a proxy on the labels, score, select, predict.

Requests are validated before the version is loaded, so a malformed request fails fast
with InvalidArgumentError whatever the state of the store. The candidates of a selection
are the version's unlabeled ids, narrowed by the request's candidate ids, its shard and
its UPS subsample, in that order.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from proxal.proxy_service.cache import FLOAT16, FLOAT32, LoadedVersion, OnceLRU, model_key
from proxal.proxy_service.classifiers import (
    LOGREG,
    ClassifierSpec,
    ProxyClassifier,
    build_classifier,
)
from proxal.proxy_service.kernel import KINDS as KERNEL_KINDS
from proxal.proxy_service.strategies import (
    CHUNK_ROWS,
    DEFAULT_MC_SAMPLES,
    KMEANS_INITIAL,
    KMEANS_SAMPLE,
    STRATEGIES,
    Picked,
    PointwiseStrategy,
    Pool,
    ProbaStrategy,
    RandomStrategy,
    Strategy,
    fallback_for,
    get_strategy,
)
from proxal.runtime.deadline import Deadline
from proxal.runtime.errors import InvalidArgumentError, NotFoundError
from proxal.runtime.ranking import id_uniform
from proxal.runtime.strategies import check_initial_batch
from proxal.runtime.subsampling import sort_by_id, ups_keep

Loader = Callable[[], LoadedVersion]
ModelCache = OnceLRU[str, ProxyClassifier]

SHOWN_BAD_VALUES = 5


@dataclass(frozen=True)
class TrainingSet:
    """Labels so far: ids (n,) int64 have classes labels (n,) int32 in [0, num_classes)."""

    ids: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int32]
    num_classes: int

    def check(self) -> None:
        """Raise InvalidArgumentError unless lengths match, ids are unique, labels in range."""
        if len(self.ids) != len(self.labels):
            raise InvalidArgumentError(
                f"training has {len(self.ids)} ids but {len(self.labels)} labels; "
                "send exactly one label per id"
            )
        if self.num_classes < 2:
            raise InvalidArgumentError(f"training.num_classes must be >= 2, got {self.num_classes}")
        bad = self.labels[(self.labels < 0) | (self.labels >= self.num_classes)]
        if len(bad):
            raise InvalidArgumentError(
                f"training labels must be in [0, {self.num_classes}); {len(bad)} are not, "
                f"e.g. {bad[:SHOWN_BAD_VALUES].tolist()}"
            )
        unique, counts = np.unique(self.ids, return_counts=True)
        repeated = unique[counts > 1]
        if len(repeated):
            raise InvalidArgumentError(
                f"training ids must be unique; {len(repeated)} are repeated, "
                f"e.g. {repeated[:SHOWN_BAD_VALUES].tolist()}"
            )


@dataclass(frozen=True)
class Shard:
    """Part of a pool: ids in [start, end), an explicit id list, or part (index, count) of
    the version's ascending ids (exactly one is set)."""

    start: int = 0
    end: int = 0
    ids: npt.NDArray[np.int64] | None = None
    part: tuple[int, int] | None = None

    def check(self) -> None:
        """Raise InvalidArgumentError for an empty or inverted range or a part out of range."""
        if self.part is not None:
            index, count = self.part
            if count < 1 or not 0 <= index < count:
                raise InvalidArgumentError(
                    f"shard.part must have count >= 1 and 0 <= index < count, got {index}/{count}"
                )
        elif self.ids is None and self.start >= self.end:
            raise InvalidArgumentError(
                f"shard.range must have start < end, got [{self.start}, {self.end})"
            )

    def rows(self, version: LoadedVersion) -> npt.NDArray[np.intp]:
        """Rows (s,) of the version inside the shard.

        NotFoundError for a range entirely outside the version's ids (a range inside their
        span that falls in a gap is just empty) or for listed ids the version lacks.
        """
        if self.part is not None:
            return version.part_rows(*self.part)
        if self.ids is not None:
            return np.unique(version.rows(self.ids, "shard.ids"))
        lo, hi = np.searchsorted(version.ids, [self.start, self.end])
        outside = not len(version.ids) or (
            self.end <= version.ids[0] or self.start > version.ids[-1]
        )
        if outside:
            span = f"{version.ids[0]}..{version.ids[-1]}" if len(version.ids) else "none"
            raise NotFoundError(
                f"shard.range [{self.start}, {self.end}) holds no id of embedding version "
                f"{version.name} (its ids: {span})"
            )
        return np.arange(lo, hi)


@dataclass(frozen=True)
class Subsampling:
    """UPS: previous scores (n,) of ids (n,), the kept top fraction gamma and temperature T."""

    gamma: float
    temperature: float
    previous_ids: npt.NDArray[np.int64]
    previous_scores: npt.NDArray[np.float32]

    def check(self) -> None:
        """Raise InvalidArgumentError unless 0 < gamma <= 1, T > 0 and the scores line up."""
        if not 0 < self.gamma <= 1:
            raise InvalidArgumentError(f"subsampling.gamma must be in (0, 1], got {self.gamma}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InvalidArgumentError(
                f"subsampling.temperature must be a finite number > 0, got {self.temperature}"
            )
        if len(self.previous_ids) != len(self.previous_scores):
            raise InvalidArgumentError(
                f"subsampling has {len(self.previous_ids)} previous_ids but "
                f"{len(self.previous_scores)} previous_scores; send one score per id"
            )
        if not np.isfinite(self.previous_scores).all():
            raise InvalidArgumentError(
                "subsampling.previous_scores must be finite; send the scores a pointwise "
                "strategy returned (core-set and BADGE return none)"
            )
        ids, _ = self.by_id
        repeated = ids[1:][ids[1:] == ids[:-1]]
        if len(repeated):
            raise InvalidArgumentError(
                f"subsampling.previous_ids must be unique; {len(repeated)} are repeated, "
                f"e.g. {np.unique(repeated)[:SHOWN_BAD_VALUES].tolist()}"
            )

    @functools.cached_property
    def by_id(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The previous ids (n,) ascending and their scores (n,): one sort, reused."""
        return sort_by_id(self.previous_ids, self.previous_scores)

    def keep(self, ids: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.bool_]:
        """Which candidates ids (m,) to re-score: a (m,) mask, deterministic given seed.

        Ranks r in [0, 1] are taken over all previous scores as sent (0 = highest, ties by
        id), so shards given the same previous scores agree. An id is kept with probability
        exp(-max(0, r - gamma) / T), taken as 0 past r = gamma + 17 T where it is below the
        draws' 2^-24 resolution; ids without a previous score are always kept. The draw for
        an id is a hash of (seed, id), so vary the seed from round to round.
        """
        previous_ids, previous_scores = self.by_id
        return ups_keep(ids, previous_ids, previous_scores, self.gamma, self.temperature, seed)


@dataclass(frozen=True)
class Query:
    """One selection request in domain terms (see SelectRequest in proxy.proto)."""

    training: TrainingSet
    strategy: str
    k: int
    seed: int
    spec: ClassifierSpec = field(default_factory=ClassifierSpec)
    candidate_ids: npt.NDArray[np.int64] | None = None
    shard: Shard | None = None
    subsampling: Subsampling | None = None
    return_scores: bool = False
    mc_samples: int = 0
    initial: str = ""  # "random" ("") | "kmeans": how to pick while the proxy cannot fit
    class_balanced: bool = False  # round-robin over predicted classes (pointwise strategies)
    precision: str = ""  # "" (the replica's rule) | "float32" | "float16": the scoring matrix


@dataclass(frozen=True)
class Timings:
    """Seconds spent loading the version (0 when cached), fitting, scoring and selecting;
    ``rescore_s``, part of ``score_s``: re-scoring float16 survivors from float32 rows."""

    load_s: float = 0.0
    fit_s: float = 0.0
    score_s: float = 0.0
    select_s: float = 0.0
    rescore_s: float = 0.0


@dataclass(frozen=True)
class SelectionResult:
    """Up to k selected ids (k,) best first with their scores (k,) float32.

    ``scored_ids``/``scored_scores`` (m,) hold every score computed when asked for and the
    strategy is pointwise; empty otherwise. ``predicted_labels`` (k,) int32 and
    ``predicted_probabilities`` (k,) float32 are the fitted proxy's class of each pick and
    its probability; empty when no proxy could be fitted (labels of fewer than two classes).
    """

    ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    strategy_used: str
    fallback_reason: str
    timings: Timings
    n_candidates: int
    scored_ids: npt.NDArray[np.int64]
    scored_scores: npt.NDArray[np.float32]
    predicted_labels: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    predicted_probabilities: npt.NDArray[np.float32] = field(
        default_factory=lambda: np.zeros(0, np.float32)
    )
    precision: str = FLOAT32  # how the candidates were scored (see Query.precision)
    rescored: int = 0  # float16: candidates re-scored exactly from their float32 rows


@dataclass(frozen=True)
class PredictionResult:
    """Predicted classes (m,) int32, their probabilities (m,) float32 and, when a strategy
    was asked for, each id's acquisition score (m,) float32 (else empty)."""

    labels: npt.NDArray[np.int32]
    confidence: npt.NDArray[np.float32]
    timings: Timings
    scores: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))


def fit(
    version: LoadedVersion,
    models: ModelCache,
    training: TrainingSet,
    train_rows: npt.NDArray[np.intp],
    spec: ClassifierSpec,
    seed: int,
) -> ProxyClassifier:
    """The model for this training set, from `models` or freshly fitted (and cached)."""
    key = model_key(
        version.pool,
        version.version,
        spec,
        seed,
        training.ids,
        training.labels,
        training.num_classes,
    )
    model, _ = models.get(
        key,
        lambda: build_classifier(spec, seed).fit(
            version.exact(train_rows), training.labels, training.num_classes
        ),
    )
    return model


def candidate_rows(
    version: LoadedVersion,
    train_rows: npt.NDArray[np.intp],
    candidate_ids: npt.NDArray[np.int64] | None,
    shard: Shard | None = None,
) -> npt.NDArray[np.intp]:
    """Rows of the unlabeled candidates, ascending and distinct (all unlabeled if none given)."""
    unlabeled = np.ones(len(version.ids), dtype=bool)
    unlabeled[train_rows] = False
    if shard is not None:
        in_shard = np.zeros(len(version.ids), dtype=bool)
        in_shard[shard.rows(version)] = True
        unlabeled &= in_shard
    if candidate_ids is None or not len(candidate_ids):
        return np.flatnonzero(unlabeled)
    rows = version.rows(np.unique(candidate_ids), "candidate_ids")
    return rows[unlabeled[rows]]


def check_query(query: Query, check_k: bool = True) -> tuple[Strategy, ClassifierSpec, int]:
    """Validate everything that needs no data; (strategy, resolved spec, MC samples)."""
    if check_k and query.k <= 0:
        raise InvalidArgumentError(f"k must be >= 1, got {query.k}")
    if query.mc_samples < 0:
        raise InvalidArgumentError(
            f"mc_samples must be >= 0 (0 means {DEFAULT_MC_SAMPLES}), got {query.mc_samples}"
        )
    strategy = get_strategy(query.strategy)
    spec = query.spec.resolved()
    mc_samples = query.mc_samples or DEFAULT_MC_SAMPLES
    strategy.check(spec.kind, mc_samples)
    check_initial_batch(query.initial)
    check_precision(query, strategy, spec.kind)
    query.training.check()
    if query.shard is not None:
        query.shard.check()
    if query.subsampling is not None:
        query.subsampling.check()
    return strategy, spec, mc_samples


def kernel_served(strategy: Strategy, kind: str, class_balanced: bool = False) -> bool:
    """Whether a float16 matrix gives this selection float32's answer: logistic regression
    with least confidence, margin or entropy (the kernel; random needs no matrix)."""
    if isinstance(strategy, RandomStrategy):
        return True
    return kind == LOGREG and strategy.name in KERNEL_KINDS and not class_balanced


def check_precision(query: Query, strategy: Strategy, kind: str) -> None:
    """InvalidArgumentError for an unknown precision, or float16 where it is not exact."""
    if query.precision not in ("", FLOAT32, FLOAT16):
        raise InvalidArgumentError(
            f"precision must be '' (the replica's rule), 'float32' or 'float16', got "
            f"{query.precision!r}"
        )
    if query.precision == FLOAT16 and not kernel_served(strategy, kind, query.class_balanced):
        raise InvalidArgumentError(
            "precision 'float16' serves the logreg classifier with least_confidence, margin, "
            f"entropy or random (not class-balanced); got strategy {strategy.name!r} with "
            f"{kind!r}: ask for '' or 'float32'"
        )


def wanted_precision(query: Query) -> str:
    """The precision to load the version in for this query: "" (as held: the replica's
    rule) where float16 is exact for it, else "float32"; raises as `check_query`."""
    strategy, spec, _ = check_query(query, check_k=False)
    if kernel_served(strategy, spec.kind, query.class_balanced):
        return query.precision
    return FLOAT32


def _query_rows(
    version: LoadedVersion, train_rows: npt.NDArray[np.intp], query: Query
) -> tuple[npt.NDArray[np.intp], int]:
    """The rows (c,) the query scores (candidates, shard, UPS keep) and the k to pick."""
    rows = candidate_rows(version, train_rows, query.candidate_ids, query.shard)
    if query.subsampling is not None:
        rows = rows[query.subsampling.keep(version.ids[rows], query.seed)]
    if query.shard is not None:
        return rows, min(query.k, len(rows))
    if query.k > len(rows):
        raise InvalidArgumentError(
            f"k={query.k} but only {len(rows)} candidates are left once labeled ids are "
            f"excluded; ask for at most {len(rows)}"
        )
    return rows, query.k


def _resolve(chosen: Strategy, query: Query, candidates: int) -> tuple[Strategy, str, bool]:
    """(the strategy that runs, why it replaced the chosen one or "", class-balanced?)."""
    labels = query.training.labels
    reason = chosen.unusable_reason(labels)
    if reason:
        chosen = fallback_for(chosen, query.initial)
        reason += f"; selected with {chosen.name} instead"
        if chosen is KMEANS_INITIAL and candidates > max(KMEANS_SAMPLE, query.k):
            reason += (
                f" (clustered a seeded sample of {max(KMEANS_SAMPLE, query.k)} of the "
                f"{candidates} candidates)"
            )
    balanced = (
        query.class_balanced
        and isinstance(chosen, PointwiseStrategy)
        and len(np.unique(labels)) >= 2
    )
    return chosen, reason, balanced


def _pool(
    version: LoadedVersion,
    query: Query,
    rows: npt.NDArray[np.intp],
    train_rows: npt.NDArray[np.intp],
    model: ProxyClassifier | None,
    mc_samples: int,
    threads: int,
    deadline: Deadline,
) -> Pool:
    """What a strategy sees of one selection: candidates `rows` (m,) of `version`."""
    return Pool(
        vectors=version.vectors,
        rows=rows,
        ids=version.ids[rows],
        train_rows=train_rows,
        labels=query.training.labels,
        num_classes=query.training.num_classes,
        model=model,
        seed=query.seed,
        mc_samples=mc_samples,
        threads=threads,
        deadline=deadline,
        keep_scores=query.return_scores,
        norms=version.norms,
        exact_rows=version.exact,
    )


def select(
    load: Loader,
    models: ModelCache,
    query: Query,
    deadline: Deadline | None = None,
    threads: int = 1,
) -> SelectionResult:
    """Select the k most informative unlabeled candidates of the version `load` returns.

    A strategy that cannot run yet (a model strategy without labels of two classes,
    Mahalanobis with fewer than two labels) falls back to k-means when the query's initial
    is "kmeans", else to core-set for BADGE and to random otherwise, and says why. With
    `class_balanced`, a pointwise strategy (once the labels cover two classes) spreads its
    picks over the proxy's predicted classes (`PointwiseStrategy.select_balanced`).
    With a shard, k is an upper bound: a shard with fewer candidates returns all of them;
    without one, k above the candidates is an error.
    Deterministic given the seed; scoring runs on `threads` threads.
    """
    deadline = deadline or Deadline()
    chosen, spec, mc_samples = check_query(query)
    training = query.training

    start = time.perf_counter()
    version = load()
    train_rows = version.rows(training.ids, "training ids")
    rows, k = _query_rows(version, train_rows, query)
    deadline.check("loading the version")
    loaded = time.perf_counter()

    chosen, fallback_reason, balanced = _resolve(chosen, query, len(rows))
    # Fitted whenever the labels cover two classes: class balance needs the predicted
    # classes, and the picks carry the proxy's class and probability (their suggestions).
    needs_fit = k > 0 and len(np.unique(training.labels)) >= 2
    model = fit(version, models, training, train_rows, spec, query.seed) if needs_fit else None
    deadline.check("fitting the proxy")
    fitted = time.perf_counter()

    pool = _pool(version, query, rows, train_rows, model, mc_samples, threads, deadline)
    ids = pool.ids
    empty_ids, empty_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
    picked = _pick(chosen, pool, k, balanced)
    top, all_scores, select_s = picked.positions, picked.all_scores, picked.select_s
    deadline.check("scoring and selecting")
    labels, probabilities = suggest(model, version.exact(rows[top]))
    scored = time.perf_counter()
    keep_scores = query.return_scores and all_scores is not None
    return SelectionResult(
        ids=ids[top],
        scores=picked.scores,
        strategy_used=chosen.name,
        fallback_reason=fallback_reason,
        timings=Timings(
            load_s=loaded - start,
            fit_s=fitted - loaded,
            score_s=scored - fitted - select_s,
            select_s=select_s,
            rescore_s=picked.rescore_s,
        ),
        n_candidates=len(rows),
        scored_ids=ids if keep_scores else empty_ids,
        scored_scores=all_scores if keep_scores and all_scores is not None else empty_scores,
        predicted_labels=labels,
        predicted_probabilities=probabilities,
        precision=version.precision
        + ("" if version.float16_ok else " (values beyond float16's range)"),
        rescored=picked.rescored,
    )


def _pick(chosen: Strategy, pool: Pool, k: int, balanced: bool) -> Picked:
    """The strategy's k picks (nothing for k = 0)."""
    if not k:
        return Picked(positions=np.zeros(0, np.intp), scores=np.zeros(0, np.float32))
    if balanced and isinstance(chosen, PointwiseStrategy):
        return chosen.select_balanced(pool, k)
    return chosen.select(pool, k)


def suggest(
    model: ProxyClassifier | None, vectors: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The model's class (k,) int32 of each row of vectors (k, d) and its probability (k,)
    float32; both empty without a model."""
    if model is None or not len(vectors):
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    proba = model.predict_proba(vectors)  # (k, C)
    labels = proba.argmax(axis=1)
    return labels.astype(np.int32), proba[np.arange(len(labels)), labels].astype(np.float32)


def predict(
    load: Loader,
    models: ModelCache,
    training: TrainingSet,
    ids: npt.NDArray[np.int64],
    seed: int,
    spec: ClassifierSpec,
    deadline: Deadline | None = None,
    strategy: str = "",
) -> PredictionResult:
    """Classes and confidences for `ids` (m,) from a proxy fitted on `training`; with a
    pointwise `strategy`, also each id's acquisition score as Select scores it.

    Raises SingleClassError (FAILED_PRECONDITION) if the labels cover fewer than two classes,
    InvalidArgumentError for a strategy that does not score ids one by one.
    """
    spec = spec.resolved()
    training.check()
    scorer = _pointwise(strategy) if strategy else None

    start = time.perf_counter()
    version = load()
    train_rows = version.rows(training.ids, "training ids")
    rows = version.rows(ids, "ids")
    deadline = deadline or Deadline()
    deadline.check("loading the version")
    loaded = time.perf_counter()

    model = fit(version, models, training, train_rows, spec, seed)
    deadline.check("fitting the proxy")
    fitted = time.perf_counter()

    labels = np.empty(len(rows), dtype=np.int32)
    confidence = np.empty(len(rows), dtype=np.float32)
    scores = np.empty(len(rows) if scorer else 0, dtype=np.float32)
    for lo in range(0, len(rows), CHUNK_ROWS):  # (chunk, classes) probabilities at a time
        proba = model.predict_proba(version.exact(rows[lo : lo + CHUNK_ROWS]))
        chunk = proba.argmax(axis=1)
        labels[lo : lo + len(chunk)] = chunk
        confidence[lo : lo + len(chunk)] = proba[np.arange(len(chunk)), chunk]
        if isinstance(scorer, ProbaStrategy):
            scores[lo : lo + len(chunk)] = scorer.from_proba(proba)
    if isinstance(scorer, RandomStrategy):
        scores = id_uniform(ids, seed)
    scored = time.perf_counter()
    return PredictionResult(
        labels=labels,
        confidence=confidence,
        timings=Timings(load_s=loaded - start, fit_s=fitted - loaded, score_s=scored - fitted),
        scores=scores,
    )


def _pointwise(name: str) -> ProbaStrategy | RandomStrategy:
    """The strategy `name` if it scores each id from its probabilities alone (or is random);
    InvalidArgumentError otherwise."""
    strategy = get_strategy(name)
    if isinstance(strategy, ProbaStrategy | RandomStrategy):
        return strategy
    usable = [n for n, s in STRATEGIES.items() if isinstance(s, ProbaStrategy | RandomStrategy)]
    raise InvalidArgumentError(
        f"Predict scores only pointwise strategies ({', '.join(usable)}), not {name!r}"
    )
