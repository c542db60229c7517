"""Stopping signals: when may a labelling session stop? Plain numpy, no gRPC.

Three rules, each computed from a session's checkpoints (its rounds' label counts, oldest
first) and each stated with its threshold; none is a guarantee (docs/sessions.md):

- stabilizing predictions (Bloodgood & Vijay-Shanker 2009): Cohen's kappa between the
  predictions of the models of successive checkpoints on a fixed *stop set* (a seeded sample
  of the split, chosen once per session); stop when the mean of the last KAPPA_WINDOW kappas
  is >= KAPPA_THRESHOLD (the paper's defaults: a window of three, 0.99);
- accuracy change: |cross-validated accuracy now - ACCURACY_LOOKBACK checkpoints ago| <
  ACCURACY_CHANGE_THRESHOLD;
- uncertain fraction: the share of the unlabelled stop-set items whose proxy margin
  (p1 - p2) is below MARGIN_THRESHOLD; stop when it is < UNCERTAIN_STOP.

`StopHistory` keeps one session's checkpoints and turns them into the three signals.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.engine.selectors import TrainingSet
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import StratifiedKFold

STABILIZING = "stabilizing_predictions"
ACCURACY_CHANGE = "accuracy_change"
UNCERTAIN = "uncertain_fraction"
NAMES = (STABILIZING, ACCURACY_CHANGE, UNCERTAIN)

# Bloodgood & Vijay-Shanker (2009) draw the stop set once from unlabelled data (it needs no
# labels, so it can be large: kappa's sampling error shrinks with it); 2,000 keeps one
# prediction over it a few milliseconds.
STOP_SET_SIZE = 2000
STOP_SET_SALT = 0x5709  # the stop set's own stream of the session's seed
# Their default: stop when the mean kappa of the last three comparisons reaches 0.99.
KAPPA_THRESHOLD = 0.99
KAPPA_WINDOW = 3
# One point of accuracy over two checkpoints: below the cross-validation noise of a few
# hundred labels, so the rule fires only once the curve is flat.
ACCURACY_CHANGE_THRESHOLD = 0.01
ACCURACY_LOOKBACK = 2
# An item is uncertain when its two most probable classes are within 0.1 of each other; the
# session may stop when fewer than 5% of the unlabelled items are (margin-based stopping).
MARGIN_THRESHOLD = 0.1
UNCERTAIN_STOP = 0.05
CV_FOLDS = 5
# The proxy's predicted classes (m,) for ids (m,), fitted on a training set.
Predict = Callable[[TrainingSet, npt.NDArray[np.int64]], npt.NDArray[np.int32]]

RULES = {
    STABILIZING: (
        f"mean Cohen's kappa of the last {KAPPA_WINDOW} comparisons between successive "
        f"models' predictions on a fixed stop set >= {KAPPA_THRESHOLD}",
        KAPPA_THRESHOLD,
    ),
    ACCURACY_CHANGE: (
        f"|cross-validated accuracy now - {ACCURACY_LOOKBACK} rounds ago| < "
        f"{ACCURACY_CHANGE_THRESHOLD}",
        ACCURACY_CHANGE_THRESHOLD,
    ),
    UNCERTAIN: (
        f"fraction of unlabelled stop-set items with margin p1 - p2 < {MARGIN_THRESHOLD} "
        f"is < {UNCERTAIN_STOP}",
        UNCERTAIN_STOP,
    ),
}


@dataclass(frozen=True)
class StoppingSignal:
    """One rule's verdict: its value (NaN until computable, `note` says why) and threshold."""

    name: str
    rule: str
    value: float
    threshold: float
    stop: bool
    note: str = ""


def _signal(name: str, value: float, stop: bool, note: str) -> StoppingSignal:
    rule, threshold = RULES[name]
    return StoppingSignal(name, rule, value, threshold, stop, note)


def stop_set(split_ids: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.int64]:
    """The session's stop set: up to STOP_SET_SIZE ids of the split (n,), sorted, the same
    for the same split and seed on any machine."""
    ids = np.sort(np.asarray(split_ids, dtype=np.int64))
    if len(ids) <= STOP_SET_SIZE:
        return ids
    rng = np.random.default_rng([seed % 2**63, STOP_SET_SALT])
    return np.sort(rng.choice(ids, size=STOP_SET_SIZE, replace=False))


def kappa(a: npt.NDArray[np.int32], b: npt.NDArray[np.int32]) -> float:
    """Cohen's kappa of two predictions of the same items (n,); 1.0 when they are identical
    (sklearn's 0/0 when both predict one class throughout)."""
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def margins_from_scores(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """p1 - p2 (n,) from the proxy's margin-strategy scores, which are -(p1 - p2)."""
    return np.asarray(-scores, dtype=np.float32)


def stabilizing_predictions(predictions: Sequence[npt.NDArray[np.int32]]) -> StoppingSignal:
    """The rule on the stop-set predictions of successive checkpoints' models, oldest first
    (each (n,)); a `None`-free sequence of equal lengths."""
    if len(predictions) < KAPPA_WINDOW + 1:
        return _signal(
            STABILIZING,
            math.nan,
            False,
            f"needs {KAPPA_WINDOW + 1} rounds with a fitted proxy, has {len(predictions)}",
        )
    last = predictions[-(KAPPA_WINDOW + 1) :]
    kappas = [kappa(a, b) for a, b in itertools.pairwise(last)]
    value = float(np.mean(kappas))
    return _signal(
        STABILIZING,
        value,
        value >= KAPPA_THRESHOLD,
        "kappas " + ", ".join(f"{k:.4f}" for k in kappas),
    )


def accuracy_change(accuracies: Sequence[float]) -> StoppingSignal:
    """The rule on cross-validated accuracies of successive checkpoints, oldest first (NaN
    where the proxy could not be cross-validated)."""
    if len(accuracies) < ACCURACY_LOOKBACK + 1:
        return _signal(
            ACCURACY_CHANGE,
            math.nan,
            False,
            f"needs {ACCURACY_LOOKBACK + 1} rounds, has {len(accuracies)}",
        )
    now, then = accuracies[-1], accuracies[-1 - ACCURACY_LOOKBACK]
    if not (math.isfinite(now) and math.isfinite(then)):
        return _signal(
            ACCURACY_CHANGE,
            math.nan,
            False,
            "needs cross-validated accuracy now and then (two classes with two labels each)",
        )
    value = abs(now - then)
    return _signal(
        ACCURACY_CHANGE,
        value,
        value < ACCURACY_CHANGE_THRESHOLD,
        f"accuracy {then:.4f} -> {now:.4f}",
    )


def uncertain_fraction(margins: npt.NDArray[np.float32] | None) -> StoppingSignal:
    """The rule on the current proxy's margins p1 - p2 of the unlabelled stop-set items (n,);
    None while no proxy can be fitted."""
    if margins is None:
        return _signal(UNCERTAIN, math.nan, False, "needs a fitted proxy (two labelled classes)")
    if len(margins) == 0:
        return _signal(UNCERTAIN, 0.0, True, "every stop-set item is labelled")
    value = float(np.mean(margins < MARGIN_THRESHOLD))
    return _signal(
        UNCERTAIN,
        value,
        value < UNCERTAIN_STOP,
        f"{int(np.sum(margins < MARGIN_THRESHOLD))} of {len(margins)} unlabelled stop-set items",
    )


def cross_validated_accuracy(training: TrainingSet, seed: int, predict: Predict) -> float:
    """Stratified k-fold accuracy of the proxy on the labels of classes with at least two of
    them; NaN with fewer than two such classes.

    k is CV_FOLDS once any class has that many labels (classes with fewer sit out some test
    folds), not min(CV_FOLDS, the smallest class) as Status's estimate: that k moves as
    small classes fill up, and a move shifts the estimate by points the rule would read as
    a change."""
    counts = np.bincount(training.labels, minlength=training.num_classes)
    keep = counts[training.labels] >= 2
    ids, labels = training.ids[keep], training.labels[keep]
    if len(np.unique(labels)) < 2:
        return math.nan
    folds = min(CV_FOLDS, int(counts.max()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    correct = 0
    with warnings.catch_warnings():  # "the least populated class has only 2 members"
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(ids, labels))
    for train, test in splits:
        fold = TrainingSet(ids[train], labels[train], training.num_classes)
        correct += int((predict(fold, ids[test]) == labels[test]).sum())
    return correct / len(ids)


@dataclass
class StopHistory:
    """One session's checkpoints: each model's stop-set predictions (None: no proxy could be
    fitted), its cross-validated accuracy and the margins of the unlabelled stop-set items."""

    predictions: list[npt.NDArray[np.int32] | None] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    margins: npt.NDArray[np.float32] | None = None

    def add(
        self,
        predictions: npt.NDArray[np.int32] | None,
        accuracy: float,
        margins: npt.NDArray[np.float32] | None,
    ) -> None:
        """Append a checkpoint (the newest); its margins replace the previous ones."""
        self.predictions.append(predictions)
        self.accuracies.append(accuracy)
        self.margins = margins

    def signals(self) -> list[StoppingSignal]:
        """The three signals at the newest checkpoint, in NAMES order."""
        fitted: list[npt.NDArray[np.int32]] = []
        for p in reversed(self.predictions):  # the newest run of fitted checkpoints
            if p is None:
                break
            fitted.insert(0, p)
        return [
            stabilizing_predictions(fitted),
            accuracy_change(self.accuracies),
            uncertain_fraction(self.margins),
        ]


def unavailable(note: str) -> list[StoppingSignal]:
    """The three signals, NaN with `note` (e.g. the proxy cannot fit), in NAMES order."""
    return [_signal(name, math.nan, False, note) for name in NAMES]


def as_record(signals: Sequence[StoppingSignal]) -> dict[str, dict[str, float | bool | None]]:
    """Signals as JSON-ready data for a round's row: name -> {value (None for NaN), stop}."""
    return {
        s.name: {"value": s.value if math.isfinite(s.value) else None, "stop": s.stop}
        for s in signals
    }
