"""Proxy classifiers: cheap models fitted on labeled embeddings to score the unlabeled ones.

Follows scikit-learn conventions: hyper-parameters in ``__init__``, learned state in
attributes ending in ``_``, ``fit`` returns ``self``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Self

import numpy as np
import numpy.typing as npt
from proxal.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    MissingDependencyError,
)
from sklearn.linear_model import LogisticRegression
from threadpoolctl import ThreadpoolController

if TYPE_CHECKING:  # torch and lightgbm load on first use: replicas start fast
    import torch

LOGREG = "logreg"
MLP = "mlp"
LIGHTGBM = "lightgbm"
KINDS = (LOGREG, MLP, LIGHTGBM)
DEFAULT_C = 1.0
DEFAULT_MAX_ITER = 200
# Per kind: (C, max_iter); max_iter counts lbfgs iterations, MLP epochs or boosting rounds.
DEFAULTS: dict[str, tuple[float, int]] = {
    LOGREG: (DEFAULT_C, DEFAULT_MAX_ITER),
    MLP: (1.0, 200),
    LIGHTGBM: (1.0, 100),
}
MAX_ITER_LIMIT = 10_000
FEW_CLASSES = 8  # up to this many seen classes, logistic regression scores by blocked gemv
GEMV_BLOCK_ROWS = 512  # 512 x 384 float32 = 768 KiB: stays in L2 across the class loop


class SingleClassError(FailedPreconditionError):
    """The labels cover fewer than two classes, so no classifier can be fitted."""


@dataclass(frozen=True)
class ClassifierSpec:
    """A proxy classifier's kind and hyper-parameters; as in the proto, "" and 0 mean default."""

    kind: str = ""
    c: float = 0.0
    max_iter: int = 0
    balanced: bool = False  # weight classes by n / (classes x count), as sklearn's "balanced"

    def resolved(self) -> ClassifierSpec:
        """This spec with defaults filled in; raises InvalidArgumentError if out of range."""
        kind = self.kind or LOGREG
        if kind not in KINDS:
            raise InvalidArgumentError(
                f"unknown classifier kind {self.kind!r}; valid kinds: {', '.join(KINDS)}"
            )
        default_c, default_max_iter = DEFAULTS[kind]
        c = self.c or default_c
        if not (math.isfinite(c) and c > 0):
            raise InvalidArgumentError(f"classifier C must be a finite number > 0, got {self.c}")
        max_iter = self.max_iter or default_max_iter
        if not 1 <= max_iter <= MAX_ITER_LIMIT:
            raise InvalidArgumentError(
                f"classifier max_iter must be in [1, {MAX_ITER_LIMIT}], got {self.max_iter}"
            )
        return ClassifierSpec(kind=kind, c=c, max_iter=max_iter, balanced=self.balanced)


@functools.cache
def _threadpools() -> ThreadpoolController:
    """The BLAS and OpenMP libraries loaded in this process, found on the first fit."""
    return ThreadpoolController()


def _checked_labels(
    y: npt.ArrayLike, num_classes: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(y as int64, its sorted distinct classes); raises unless 2+ classes in range."""
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
    return y_arr, classes


def _balanced_weights(y: npt.NDArray[np.int64], s: int) -> npt.NDArray[np.float32]:
    """sklearn's "balanced" class weights n / (s x count) for y (n,) in [0, s): (s,)."""
    counts = np.bincount(y, minlength=s)
    return (len(y) / (s * np.maximum(counts, 1))).astype(np.float32)


def _softmax_into_columns(
    logits: npt.NDArray[np.float32], classes: npt.NDArray[np.int64], num_classes: int
) -> npt.NDArray[np.float32]:
    """Softmax over the last axis of logits (..., s), spread into (..., num_classes) columns."""
    logits = logits - logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    proba = np.zeros((*logits.shape[:-1], num_classes), dtype=np.float32)
    proba[..., classes] = logits
    return proba


class LogisticRegressionProxy:
    """Multinomial logistic regression (sklearn, lbfgs) scored in float32 with one matmul.

    Learned state: ``classes_`` (s,) int64, the classes seen in training; ``coef_`` (s, d)
    float32 and ``intercept_`` (s,) float32, one row of logits per seen class;
    ``num_classes_``, the number of probability columns ``predict_proba`` returns.
    """

    def __init__(
        self,
        C: float = DEFAULT_C,
        max_iter: int = DEFAULT_MAX_ITER,
        seed: int = 0,
        balanced: bool = False,
    ):
        self.C = C
        self.max_iter = max_iter
        self.seed = seed
        self.balanced = balanced

    def fit(
        self,
        X: npt.NDArray[np.float32],
        y: npt.ArrayLike,
        num_classes: int,
        warm_start_from: LogisticRegressionProxy | None = None,
    ) -> Self:
        """Fit on X (n, d) with labels y (n,) in [0, num_classes).

        With ``warm_start_from``, a fitted model of the same d whose seen classes equal
        those of y, lbfgs starts from its weights instead of zeros (sklearn's warm start):
        the objective is the same, so it converges to the same optimum up to the tolerance.
        (With tens of labels in 384 dimensions lbfgs needs about as many iterations either
        way, ~15; see bench/sequential.py.) Otherwise (or if the classes differ) it fits cold.
        ``warm_started_`` says which happened, ``n_iter_`` how many lbfgs iterations ran.
        Deterministic given the inputs. Raises SingleClassError if y holds fewer than two
        distinct classes, and InvalidArgumentError for labels out of range.
        """
        y_arr, classes = _checked_labels(y, num_classes)
        model = LogisticRegression(  # sklearn seeds are 32-bit; proxal's are 64-bit
            C=self.C,
            max_iter=self.max_iter,
            solver="lbfgs",
            random_state=self.seed % 2**32,
            warm_start=warm_start_from is not None,
            class_weight="balanced" if self.balanced else None,
        )
        warm = warm_start_from is not None and warm_start_from.can_warm_start(classes, X.shape[1])
        if warm:
            assert warm_start_from is not None
            model.coef_ = warm_start_from.raw_coef_.copy()
            model.intercept_ = warm_start_from.raw_intercept_.copy()
        # lbfgs evaluates the loss hundreds of times on small arrays, where waking OpenMP
        # threads costs more than it saves. The limit applies to the calling thread only.
        with _threadpools().limit(limits=1, user_api="openmp"):
            model.fit(X, y_arr)
        # sklearn's own weights, (s', d) and (s',) with s' = 1 if binary: warm starts use them
        self.raw_coef_: npt.NDArray[np.floating] = model.coef_
        self.raw_intercept_: npt.NDArray[np.floating] = model.intercept_
        self.warm_started_ = warm
        self.n_iter_ = int(np.max(model.n_iter_))
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

    def can_warm_start(self, classes: npt.NDArray[np.int64], dim: int) -> bool:
        """Whether a fit on these seen classes and dimension can start from this model."""
        return (
            hasattr(self, "raw_coef_")
            and self.raw_coef_.shape[1] == dim
            and np.array_equal(self.classes_, classes)
        )

    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """X (m, d) -> probabilities (m, num_classes) float32; unseen classes get 0."""
        X = np.asarray(X, dtype=np.float32)
        if len(self.coef_) > FEW_CLASSES:
            logits = X @ self.coef_.T
            logits += self.intercept_
            return _softmax_into_columns(logits, self.classes_, self.num_classes_)
        # With few classes BLAS's gemm spends more time packing X than multiplying (about
        # 2.5x one read of X at 4 classes); a matrix-vector product per class over
        # cache-sized blocks reads X from memory once, and the softmax then runs along
        # contiguous class rows. 1.5x faster end to end at 100,000 x 384, 4 classes.
        logits_t = np.empty((len(self.coef_), len(X)), dtype=np.float32)  # (s, m)
        for lo in range(0, len(X), GEMV_BLOCK_ROWS):
            block = X[lo : lo + GEMV_BLOCK_ROWS]
            for c, weights in enumerate(self.coef_):
                np.dot(block, weights, out=logits_t[c, lo : lo + GEMV_BLOCK_ROWS])
        logits_t += self.intercept_[:, None]
        logits_t -= np.maximum.reduce(logits_t, axis=0)
        np.exp(logits_t, out=logits_t)
        logits_t /= np.add.reduce(logits_t, axis=0)
        proba = np.zeros((len(X), self.num_classes_), dtype=np.float32)
        proba[:, self.classes_] = logits_t.T
        return proba

    def predict(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
        """X (m, d) -> most probable class (m,) int32."""
        return self.predict_proba(X).argmax(axis=1).astype(np.int32)


class MLPProxy:
    """The ASVP proxy: Linear(d, hidden) → ReLU → Dropout(p) → Linear(hidden, seen classes).

    Trained with Adam (lr ``lr``, L2 weight decay ``1e-4 / C``) on the cross-entropy for
    ``max_iter`` epochs, full-batch when n <= ``batch_size`` and in shuffled mini-batches
    otherwise. Deterministic given ``seed``: initialisation, shuffling and dropout draw from
    a local ``torch.Generator``, never from torch's global RNG. Training runs on torch's
    process-wide intra-op thread pool, whose size this class leaves as it finds it.

    Learned state: ``classes_`` (s,) int64, the classes seen in training; ``w1_`` (hidden, d),
    ``b1_`` (hidden,), ``w2_`` (s, hidden) and ``b2_`` (s,), float32 numpy weights that
    scoring uses without torch; ``num_classes_``, the number of probability columns.
    """

    def __init__(
        self,
        C: float = DEFAULTS[MLP][0],
        max_iter: int = DEFAULTS[MLP][1],
        seed: int = 0,
        hidden: int = 256,
        dropout: float = 0.2,
        lr: float = 1e-3,
        batch_size: int = 256,
        balanced: bool = False,
    ):
        self.C = C
        self.max_iter = max_iter
        self.seed = seed
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.balanced = balanced

    def fit(self, X: npt.NDArray[np.float32], y: npt.ArrayLike, num_classes: int) -> Self:
        """Fit on X (n, d) with labels y (n,) in [0, num_classes).

        Raises SingleClassError if y holds fewer than two distinct classes,
        InvalidArgumentError for labels out of range, and MissingDependencyError where
        torch is not installed (the torch-free proxy image).
        """
        torch = _import_torch()

        y_arr, classes = _checked_labels(y, num_classes)
        X_t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        y_t = torch.from_numpy(np.searchsorted(classes, y_arr))
        n, d = X_t.shape
        gen = torch.Generator().manual_seed(self.seed % 2**63)
        w1, b1 = _linear_init(d, self.hidden, gen)
        w2, b2 = _linear_init(self.hidden, len(classes), gen)
        params = [w1, b1, w2, b2]
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=1e-4 / self.C)
        weight = None
        if self.balanced:
            weight = torch.from_numpy(_balanced_weights(y_t.numpy(), len(classes)))
        keep = 1.0 - self.dropout
        for _ in range(self.max_iter):
            order = torch.randperm(n, generator=gen) if n > self.batch_size else torch.arange(n)
            for batch in order.split(self.batch_size):
                hidden = torch.relu(torch.addmm(b1, X_t[batch], w1.T))
                mask = torch.bernoulli(torch.full_like(hidden, keep), generator=gen)
                logits = torch.addmm(b2, hidden * mask / keep, w2.T)
                loss = torch.nn.functional.cross_entropy(logits, y_t[batch], weight=weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.classes_ = classes
        self.w1_, self.b1_, self.w2_, self.b2_ = (p.detach().numpy().copy() for p in params)
        self.num_classes_ = num_classes
        return self

    def hidden_features(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """X (m, d) -> the hidden layer's activations (m, hidden), dropout off."""
        hidden = np.asarray(X, dtype=np.float32) @ self.w1_.T
        hidden += self.b1_
        return np.maximum(hidden, 0.0, out=hidden)

    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """X (m, d) -> probabilities (m, num_classes) float32, dropout off; unseen get 0."""
        logits = self.hidden_features(X) @ self.w2_.T
        logits += self.b2_
        return _softmax_into_columns(logits, self.classes_, self.num_classes_)

    def predict_proba_mc(
        self, X: npt.NDArray[np.float32], samples: int, seed: int
    ) -> npt.NDArray[np.float32]:
        """X (m, d) -> MC-dropout probabilities (samples, m, num_classes) float32.

        Each sample is one network: a dropout mask over the hidden units, drawn from `seed`
        and shared by every row, so a row's probabilities do not depend on the other rows
        (scoring a pool in chunks or shards gives the same numbers).
        """
        hidden = self.hidden_features(X)
        rng = np.random.default_rng(seed)
        keep = 1.0 - self.dropout
        masks = rng.random((samples, 1, hidden.shape[1]), dtype=np.float32) < keep
        logits = (hidden * masks / np.float32(keep)) @ self.w2_.T
        logits += self.b2_
        return _softmax_into_columns(logits, self.classes_, self.num_classes_)

    def predict(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
        """X (m, d) -> most probable class (m,) int32."""
        return self.predict_proba(X).argmax(axis=1).astype(np.int32)


def _import_torch() -> ModuleType:
    """torch, or MissingDependencyError (FAILED_PRECONDITION) naming what to install."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "classifier 'mlp' (and strategy 'bald', which needs it) requires torch, which "
            "this proxy install lacks (the proxy image is built without it): use 'logreg' or "
            "'lightgbm', or install torch (pip install torch) or the full proxal package"
        ) from exc
    return torch


def _linear_init(
    fan_in: int, fan_out: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (fan_out, fan_in) and bias (fan_out,) ~ U(±1/sqrt(fan_in)), as torch.nn.Linear."""
    import torch

    bound = 1.0 / math.sqrt(fan_in)
    weight = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=gen)
    bias = torch.empty(fan_out).uniform_(-bound, bound, generator=gen)
    return weight.requires_grad_(), bias.requires_grad_()


class LightGBMProxy:
    """Gradient-boosted trees (``lightgbm.LGBMClassifier``), one boosting round per iteration.

    ``max_iter`` is the number of boosting rounds; ``C`` maps to the L2 penalty on leaf
    values, ``reg_lambda = 1 / C``. Deterministic given ``seed`` (one thread, row-wise
    histograms, ``deterministic=True``). Scoring dense embeddings is slow: ``predict_proba`` on
    10,000 x 384 float32 rows took 0.10-0.13 s against 3-4 ms for LogisticRegressionProxy,
    about 30x slower (100 rounds, 4 classes, fitted on 2,000 rows; 2-core CPU, one BLAS
    thread), because every row walks every tree instead of one matmul scoring all rows.

    Learned state: ``classes_`` (s,) int64, the classes seen in training; ``model_``, the
    fitted ``LGBMClassifier``; ``num_classes_``, the number of probability columns.
    """

    def __init__(
        self,
        C: float = DEFAULTS[LIGHTGBM][0],
        max_iter: int = DEFAULTS[LIGHTGBM][1],
        seed: int = 0,
        min_child_samples: int = 5,
        balanced: bool = False,
    ):
        self.C = C
        self.max_iter = max_iter
        self.seed = seed
        self.min_child_samples = min_child_samples
        self.balanced = balanced

    def fit(self, X: npt.NDArray[np.float32], y: npt.ArrayLike, num_classes: int) -> Self:
        """Fit on X (n, d) with labels y (n,) in [0, num_classes).

        Raises SingleClassError if y holds fewer than two distinct classes, and
        InvalidArgumentError for labels out of range.
        """
        y_arr, classes = _checked_labels(y, num_classes)
        from lightgbm import LGBMClassifier

        model = LGBMClassifier(
            n_estimators=self.max_iter,
            reg_lambda=1.0 / self.C,
            min_child_samples=self.min_child_samples,
            class_weight="balanced" if self.balanced else None,
            random_state=self.seed % 2**31,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        model.fit(np.asarray(X, dtype=np.float32), y_arr)
        self.classes_ = classes
        self.model_ = model
        self.num_classes_ = num_classes
        return self

    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """X (m, d) -> probabilities (m, num_classes) float32; unseen classes get 0."""
        seen = np.asarray(self.model_.predict_proba(np.asarray(X, dtype=np.float32)))
        proba = np.zeros((seen.shape[0], self.num_classes_), dtype=np.float32)
        proba[:, self.classes_] = seen
        return proba

    def predict(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
        """X (m, d) -> most probable class (m,) int32."""
        return self.predict_proba(X).argmax(axis=1).astype(np.int32)


ProxyClassifier = LogisticRegressionProxy | MLPProxy | LightGBMProxy
_CLASSES: dict[str, type[ProxyClassifier]] = {
    LOGREG: LogisticRegressionProxy,
    MLP: MLPProxy,
    LIGHTGBM: LightGBMProxy,
}


def build_classifier(spec: ClassifierSpec, seed: int) -> ProxyClassifier:
    """An unfitted classifier for `spec`; raises InvalidArgumentError for a bad spec."""
    resolved = spec.resolved()
    return _CLASSES[resolved.kind](
        C=resolved.c, max_iter=resolved.max_iter, seed=seed, balanced=resolved.balanced
    )


def refit(
    previous: ProxyClassifier | None,
    spec: ClassifierSpec,
    seed: int,
    X: npt.NDArray[np.float32],
    y: npt.ArrayLike,
    num_classes: int,
) -> ProxyClassifier:
    """A new model for `spec` fitted on X (n, d), y (n,), warm-started from `previous`.

    Only logistic regression warm-starts (from a previous logistic regression with the
    same seen classes, see LogisticRegressionProxy.fit); the MLP and LightGBM proxies, and
    logistic regression when a label brings a new class, refit cold. `previous` is never
    modified, so a model handed out earlier stays valid.
    """
    model = build_classifier(spec, seed)
    if isinstance(model, LogisticRegressionProxy) and isinstance(previous, LogisticRegressionProxy):
        return model.fit(X, y, num_classes, warm_start_from=previous)
    return model.fit(X, y, num_classes)
