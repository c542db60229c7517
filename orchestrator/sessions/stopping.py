"""A live session's stopping signals (`engine.stopping`), computed from the store alone.

The models compared are those of the session's checkpoints: the label counts its rounds
were selected at, and the count now. The model of a checkpoint of n labels is refitted on
the first n labels of the label log (in the order they were given) on the session's current
embedding version with the session's seed, so every orchestrator sharing the database, and
one restarted, computes the same signals; nothing is stored. Predictions and
cross-validated accuracies are cached in memory per (checkpoint, its labels' digest).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.engine.loop import Engine, classifier_of
from proxal.orchestrator_service.engine.selectors import Selector, TrainingSet
from proxal.orchestrator_service.engine.stopping import (
    ACCURACY_LOOKBACK,
    KAPPA_WINDOW,
    Predict,
    StopHistory,
    StoppingSignal,
    cross_validated_accuracy,
    margins_from_scores,
    stop_set,
)
from proxal.store import SessionRecord
from proxal.store.labels import LabelLog

CHECKPOINTS = max(KAPPA_WINDOW, ACCURACY_LOOKBACK) + 1  # the newest ones the rules read
# (labels (m,), margin scores (m,)) of a checkpoint's model on the stop set, or None.
Fitted = tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]] | None
Key = tuple[str, int, str]  # (embedding version, label count, digest of those labels)
T = TypeVar("T")


class LiveStopping:
    """The three stopping signals of live sessions (see the module doc)."""

    def __init__(self, engine: Engine, proxy: Selector) -> None:
        self.engine = engine
        self.proxy = proxy
        self._lock = threading.Lock()
        self._fitted: dict[str, dict[Key, Fitted]] = {}
        self._accuracy: dict[str, dict[Key, float]] = {}

    def forget(self, session: str) -> None:
        with self._lock:
            self._fitted.pop(session, None)
            self._accuracy.pop(session, None)

    def signals(self, record: SessionRecord, log: LabelLog) -> list[StoppingSignal]:
        """The signals at the session's newest checkpoint (the labels it has now); the
        proxy's errors propagate."""
        counts = checkpoints(
            [r.labels_total for r in self.engine.store.read_rounds(record.session)],
            len(log.labels),
        )
        stop_ids = stop_set(self.engine.split_ids(record.pool, record.split), record.seed)
        labelled = list(log.labels.items())
        fitted: dict[Key, Fitted] = {}
        accuracy: dict[Key, float] = {}
        history = StopHistory()
        for n, count in enumerate(counts):
            items = labelled[:count]
            key = (record.embedding_version, count, _digest(items))
            training = self.engine.training(record, dict(items))
            fitted[key] = self._cached(self._fitted, record, key) or self._fit(
                record, training, stop_ids
            )
            acc = math.nan
            if n in (len(counts) - 1, len(counts) - 1 - ACCURACY_LOOKBACK):
                cached = self._cached(self._accuracy, record, key)
                acc = (
                    cross_validated_accuracy(training, record.seed, self._predict(record))
                    if cached is None
                    else cached
                )
                accuracy[key] = acc
            found = fitted[key]
            unlabelled = ~np.isin(stop_ids, training.ids)
            history.add(
                None if found is None else found[0],
                acc,
                None if found is None else margins_from_scores(found[1][unlabelled]),
            )
        with self._lock:  # keep only the checkpoints the rules read
            self._fitted[record.session] = fitted
            self._accuracy[record.session] = accuracy
        return history.signals()

    def _cached(self, cache: dict[str, dict[Key, T]], record: SessionRecord, key: Key) -> T | None:
        with self._lock:
            return cache.get(record.session, {}).get(key)

    def _fit(
        self, record: SessionRecord, training: TrainingSet, stop_ids: npt.NDArray[np.int64]
    ) -> Fitted:
        """The checkpoint's model on the stop set; None with fewer than two classes."""
        if len(np.unique(training.labels)) < 2:
            return None
        found = self.proxy.predictions(
            record.pool,
            record.embedding_version,
            training,
            stop_ids,
            seed=record.seed,
            classifier=classifier_of(record),
            strategy="margin",
        )
        return found.labels, found.scores

    def _predict(self, record: SessionRecord) -> Predict:
        def predict(training: TrainingSet, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
            return self.proxy.predict(
                record.pool,
                record.embedding_version,
                training,
                ids,
                record.seed,
                classifier=classifier_of(record),
            )

        return predict


def checkpoints(round_labels: list[int], now: int) -> list[int]:
    """The newest CHECKPOINTS label counts, ascending: the distinct positive counts the
    rounds were selected at (below `now`), then `now` (nothing while there are no labels)."""
    if now <= 0:
        return []
    past = sorted({n for n in round_labels if 0 < n < now})
    return [*past, now][-CHECKPOINTS:]


def _digest(items: list[tuple[int, str]]) -> str:
    return hashlib.sha256(json.dumps(items, separators=(",", ":")).encode()).hexdigest()
