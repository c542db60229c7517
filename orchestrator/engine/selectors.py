"""What the engine asks of a selector, as plain dataclasses (no gRPC, no protos).

A selector is any object with `select(...)` and `predict(...)` as below: one proxy
(`proxal.orchestrator_service.rpc.clients.ProxyClient`) or a sharded fan-out over replicas
(`rpc.sharding.ShardedSelector`). `rpc.clients` turns these dataclasses
into protos at the boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.strategies import DEFAULT_CLASSIFIER, check_classifier

MAX_CLASSIFIER_ITER = 100_000


@dataclass(frozen=True)
class ClassifierSpec:
    """The proxy fitted each round: `kind` (logreg, mlp, lightgbm), inverse regularisation
    `c` and `max_iter` (0: the proxy's defaults), class-`balanced` weights."""

    kind: str = DEFAULT_CLASSIFIER
    c: float = 0.0
    max_iter: int = 0
    balanced: bool = False

    def validate(self) -> ClassifierSpec:
        """This spec with its kind checked; InvalidArgumentError saying what to fix."""
        kind = check_classifier(self.kind or DEFAULT_CLASSIFIER)
        if not (math.isfinite(self.c) and self.c >= 0):
            raise InvalidArgumentError(
                f"classifier c must be a finite number > 0 (0: the proxy's default 1.0), "
                f"got {self.c}"
            )
        if not 0 <= self.max_iter <= MAX_CLASSIFIER_ITER:
            raise InvalidArgumentError(
                f"classifier max_iter must be in 0..{MAX_CLASSIFIER_ITER} (0: the proxy's "
                f"default), got {self.max_iter}"
            )
        return ClassifierSpec(kind, float(self.c), int(self.max_iter), bool(self.balanced))


@dataclass(frozen=True)
class Subsampling:
    """UPS for one Select: the last scores (n,) of ids (n,), re-score the top `gamma` plus a
    sample tempered by `temperature`."""

    gamma: float
    temperature: float
    previous_ids: npt.NDArray[np.int64]
    previous_scores: npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrainingSet:
    """Labels so far: ids (n,) with class indices (n,) in [0, num_classes)."""

    ids: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int32]
    num_classes: int


@dataclass(frozen=True)
class Selection:
    """A proxy's answer: ids (k,) best first and their scores (k,).

    ``predicted_labels`` (k,) int32 class indices and ``predicted_probabilities`` (k,) are
    the fitted proxy's guess for each pick; empty when nothing was fitted (a cold start).
    """

    ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    strategy: str
    fallback_reason: str
    timings: dict[str, float]
    candidates: int = 0
    # Every score computed (n,), when return_scores was asked for; else empty.
    scored_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    scored_scores: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    predicted_labels: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    predicted_probabilities: npt.NDArray[np.float32] = field(
        default_factory=lambda: np.zeros(0, np.float32)
    )


@dataclass(frozen=True)
class Predictions:
    """A proxy's predictions for ids (n,): class indices (n,) int32, their probabilities
    (n,) float32 and, when a strategy was asked for, acquisition scores (n,) float32 (higher
    = more informative; else empty)."""

    labels: npt.NDArray[np.int32]
    probabilities: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]


class Selector(Protocol):
    """Chooses and predicts with a proxy fitted on a training set (see module doc)."""

    def select(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        strategy: str,
        k: int,
        seed: int,
        candidate_ids: npt.NDArray[np.int64] | None = None,
        classifier: ClassifierSpec | None = None,
        subsampling: Subsampling | None = None,
        return_scores: bool = False,
        mc_samples: int = 0,
        initial: str = "",
        class_balanced: bool = False,
    ) -> Selection: ...

    def predict(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        ids: npt.NDArray[np.int64],
        seed: int,
        classifier: ClassifierSpec | None = None,
    ) -> npt.NDArray[np.int32]: ...

    def predictions(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        ids: npt.NDArray[np.int64],
        seed: int,
        classifier: ClassifierSpec | None = None,
        strategy: str = "",
    ) -> Predictions: ...
