"""The proxy's domain logic, free of gRPC: fit a proxy on the labels, score, select, predict.

Requests are validated before the version is loaded, so a malformed request fails fast
with InvalidArgumentError whatever the state of the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from proxal_runtime.errors import InvalidArgumentError
from proxy_service.cache import LoadedVersion, OnceLRU, model_key
from proxy_service.classifiers import ClassifierSpec, ProxyClassifier, build_classifier
from proxy_service.strategies import STRATEGIES, RandomStrategy, get_strategy, select_top_k

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
class Timings:
    """Seconds spent loading the version, fitting, scoring and selecting."""

    load_s: float = 0.0
    fit_s: float = 0.0
    score_s: float = 0.0
    select_s: float = 0.0


@dataclass(frozen=True)
class SelectionResult:
    """k selected ids (k,) best first with their scores (k,) float32."""

    ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    strategy_used: str
    fallback_reason: str
    timings: Timings
    n_candidates: int


@dataclass(frozen=True)
class PredictionResult:
    """Predicted classes (m,) int32 and their probabilities (m,) float32."""

    labels: npt.NDArray[np.int32]
    confidence: npt.NDArray[np.float32]
    timings: Timings


def _fit(
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
            version.vectors[train_rows], training.labels, training.num_classes
        ),
    )
    return model


def _fallback_reason(strategy: str, labels: npt.NDArray[np.int32]) -> str:
    """Why a model strategy cannot run on `labels`, or "" if it can."""
    classes = np.unique(labels)
    if len(classes) >= 2:
        return ""
    have = "there are no labels yet" if not len(labels) else f"all labels are class {classes[0]}"
    return (
        f"{strategy} needs a model fitted on labels of at least two classes and {have}; "
        "selected at random instead"
    )


def _candidate_rows(
    version: LoadedVersion,
    train_rows: npt.NDArray[np.intp],
    candidate_ids: npt.NDArray[np.int64] | None,
) -> npt.NDArray[np.intp]:
    """Rows of the unlabeled candidates, ascending and distinct (all unlabeled if none given)."""
    unlabeled = np.ones(len(version.ids), dtype=bool)
    unlabeled[train_rows] = False
    if candidate_ids is None or not len(candidate_ids):
        return np.flatnonzero(unlabeled)
    rows = version.rows(np.unique(candidate_ids), "candidate_ids")
    return rows[unlabeled[rows]]


def select(
    load: Loader,
    models: ModelCache,
    training: TrainingSet,
    candidate_ids: npt.NDArray[np.int64] | None,
    strategy: str,
    k: int,
    seed: int,
    spec: ClassifierSpec,
) -> SelectionResult:
    """Select the k most informative unlabeled candidates of the version `load` returns.

    Labeled ids are never candidates; `candidate_ids` None or empty means every unlabeled
    id. A model strategy without labels of two classes falls back to random (and says why).
    Deterministic given `seed`.
    """
    if k <= 0:
        raise InvalidArgumentError(f"k must be >= 1, got {k}")
    chosen = get_strategy(strategy)
    spec = spec.resolved()
    training.check()

    start = time.perf_counter()
    version = load()
    train_rows = version.rows(training.ids, "training ids")
    rows = _candidate_rows(version, train_rows, candidate_ids)
    if k > len(rows):
        raise InvalidArgumentError(
            f"k={k} but only {len(rows)} candidates are left once labeled ids are excluded; "
            f"ask for at most {len(rows)}"
        )
    loaded = time.perf_counter()

    fallback_reason = ""
    if chosen.needs_model:
        fallback_reason = _fallback_reason(chosen.name, training.labels)
        if fallback_reason:
            chosen = STRATEGIES[RandomStrategy.name]
    model = _fit(version, models, training, train_rows, spec, seed) if chosen.needs_model else None
    fitted = time.perf_counter()

    rng = np.random.default_rng(seed)
    proba = None if model is None else model.predict_proba(version.vectors[rows])
    scores = chosen.score(proba, len(rows), rng)
    scored = time.perf_counter()

    top = select_top_k(scores, k, rng)
    selected = time.perf_counter()
    return SelectionResult(
        ids=version.ids[rows[top]],
        scores=scores[top],
        strategy_used=chosen.name,
        fallback_reason=fallback_reason,
        timings=Timings(
            load_s=loaded - start,
            fit_s=fitted - loaded,
            score_s=scored - fitted,
            select_s=selected - scored,
        ),
        n_candidates=len(rows),
    )


def predict(
    load: Loader,
    models: ModelCache,
    training: TrainingSet,
    ids: npt.NDArray[np.int64],
    seed: int,
    spec: ClassifierSpec,
) -> PredictionResult:
    """Classes and confidences for `ids` (m,) from a proxy fitted on `training`.

    Raises SingleClassError (FAILED_PRECONDITION) if the labels cover fewer than two classes.
    """
    spec = spec.resolved()
    training.check()

    start = time.perf_counter()
    version = load()
    train_rows = version.rows(training.ids, "training ids")
    rows = version.rows(ids, "ids")
    loaded = time.perf_counter()

    model = _fit(version, models, training, train_rows, spec, seed)
    fitted = time.perf_counter()

    proba = model.predict_proba(version.vectors[rows])
    labels = proba.argmax(axis=1).astype(np.int32)
    confidence = proba[np.arange(len(rows)), labels]
    scored = time.perf_counter()
    return PredictionResult(
        labels=labels,
        confidence=confidence,
        timings=Timings(load_s=loaded - start, fit_s=fitted - loaded, score_s=scored - fitted),
    )
