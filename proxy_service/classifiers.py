"""Proxy classifiers: cheap models fitted on labeled embeddings to score the unlabeled ones.

Follows scikit-learn conventions: hyper-parameters in ``__init__``, learned state in
attributes ending in ``_``, ``fit`` returns ``self``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from threadpoolctl import ThreadpoolController

from proxal_runtime.errors import FailedPreconditionError, InvalidArgumentError

LOGREG = "logreg"
KINDS = (LOGREG,)
DEFAULT_C = 1.0
DEFAULT_MAX_ITER = 200
MAX_ITER_LIMIT = 10_000


class SingleClassError(FailedPreconditionError):
    """The labels cover fewer than two classes, so no classifier can be fitted."""


@dataclass(frozen=True)
class ClassifierSpec:
    """A proxy classifier's kind and hyper-parameters; as in the proto, "" and 0 mean default."""

    kind: str = ""
    c: float = 0.0
    max_iter: int = 0

    def resolved(self) -> ClassifierSpec:
        """This spec with defaults filled in; raises InvalidArgumentError if out of range."""
        kind = self.kind or LOGREG
        if kind not in KINDS:
            raise InvalidArgumentError(
                f"unknown classifier kind {self.kind!r}; valid kinds: {', '.join(KINDS)}"
            )
        c = self.c or DEFAULT_C
        if not (math.isfinite(c) and c > 0):
            raise InvalidArgumentError(f"classifier C must be a finite number > 0, got {self.c}")
        max_iter = self.max_iter or DEFAULT_MAX_ITER
        if not 1 <= max_iter <= MAX_ITER_LIMIT:
            raise InvalidArgumentError(
                f"classifier max_iter must be in [1, {MAX_ITER_LIMIT}], got {self.max_iter}"
            )
        return ClassifierSpec(kind=kind, c=c, max_iter=max_iter)


@functools.cache
def _threadpools() -> ThreadpoolController:
    """The BLAS and OpenMP libraries loaded in this process, found on the first fit."""
    return ThreadpoolController()


class LogisticRegressionProxy:
    """Multinomial logistic regression (sklearn, lbfgs) scored in float32 with one matmul.

    Learned state: ``classes_`` (s,) int64, the classes seen in training; ``coef_`` (s, d)
    float32 and ``intercept_`` (s,) float32, one row of logits per seen class;
    ``num_classes_``, the number of probability columns ``predict_proba`` returns.
    """

    def __init__(self, C: float = DEFAULT_C, max_iter: int = DEFAULT_MAX_ITER, seed: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, X: npt.NDArray[np.float32], y: npt.ArrayLike, num_classes: int) -> Self:
        """Fit on X (n, d) with labels y (n,) in [0, num_classes).

        Raises SingleClassError if y holds fewer than two distinct classes, and
        InvalidArgumentError for labels out of range.
        """
        y_arr = np.asarray(y, dtype=np.int64)
        classes = np.unique(y_arr)
        if len(classes) < 2:
            raise SingleClassError(
                f"a classifier needs labels of at least two classes, got {len(classes)} "
                f"({classes.tolist()}); label more examples"
            )
        if classes[0] < 0 or classes[-1] >= num_classes:
            raise InvalidArgumentError(
                f"labels must be in [0, {num_classes}), got {classes[0]}..{classes[-1]}"
            )
        model = LogisticRegression(  # sklearn seeds are 32-bit; proxal's are 64-bit
            C=self.C, max_iter=self.max_iter, solver="lbfgs", random_state=self.seed % 2**32
        )
        # lbfgs evaluates the loss hundreds of times on small arrays, where waking OpenMP
        # threads costs more than it saves. The limit applies to the calling thread only.
        with _threadpools().limit(limits=1, user_api="openmp"):
            model.fit(X, y_arr)
        coef = model.coef_.astype(np.float32)
        intercept = model.intercept_.astype(np.float32)
        if len(classes) == 2:
            # Binary sklearn models keep one row w (logit of class 1); softmax([0, z]) is
            # sigmoid(z), so a zero row for class 0 reproduces their probabilities exactly.
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros_like(intercept), intercept])
        self.classes_ = classes
        self.coef_ = coef
        self.intercept_ = intercept
        self.num_classes_ = num_classes
        return self

    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """X (m, d) -> probabilities (m, num_classes) float32; unseen classes get 0."""
        logits = np.asarray(X, dtype=np.float32) @ self.coef_.T
        logits += self.intercept_
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        proba = np.zeros((logits.shape[0], self.num_classes_), dtype=np.float32)
        proba[:, self.classes_] = logits
        return proba

    def predict(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
        """X (m, d) -> most probable class (m,) int32."""
        return self.predict_proba(X).argmax(axis=1).astype(np.int32)


def build_classifier(spec: ClassifierSpec, seed: int) -> LogisticRegressionProxy:
    """An unfitted classifier for `spec`; raises InvalidArgumentError for a bad spec."""
    resolved = spec.resolved()
    return LogisticRegressionProxy(C=resolved.c, max_iter=resolved.max_iter, seed=seed)
