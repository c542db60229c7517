"""PLASM: pseudo-labeling for acquisition-successor mismatch (Tsvigun et al., 2022).

After acquisition, a teacher is fine-tuned on the gold labels (part of them held out to
score it), pseudo-labels the unlabeled pool, the pseudo-labels are filtered, and the
successor -- any Hugging Face encoder checkpoint, not necessarily the acquisition encoder --
trains on gold + the kept pseudo-labels.

Filters:

- ``uncertainty`` (the paper's ablation): keep the fraction of pseudo-labels equal to the
  teacher's held-out accuracy ("100%-score"), the ones it is most certain of (lowest
  least-confidence uncertainty, 1 - max p).
- ``cleanlab`` (confident learning, Northcutt et al., 2021): out-of-sample probabilities
  from a 5-fold logistic regression on the teacher's own features of the pseudo-labelled
  texts; ``cleanlab.filter.find_label_issues`` flags the pseudo-labels that disagree with
  them, and those are dropped.
- ``none``: keep every pseudo-label.

A teacher whose held-out accuracy is not above chance (the majority class's share of the
held-out labels, and 1/num_classes) is refused: its pseudo-labels would be mostly noise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.successor.config import Progress
from proxal.orchestrator_service.successor.training import (
    Successor,
    SuccessorConfig,
    fine_tune_successor,
)
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError
from proxal.runtime.uncertainty import least_confidence

FILTERS = ("uncertainty", "cleanlab", "none")


@dataclass(frozen=True)
class PlasmConfig:
    """How PLASM runs.

    `teacher` must hold out some labels (`validation_fraction` > 0): their accuracy sets the
    uncertainty filter's keep fraction and the chance check. `pool_sample` pseudo-labels at
    most that many unlabeled texts (a seeded uniform sample; None: all of them).
    `teacher_model`/`successor_model` are local checkpoint directories (None: MiniLM-L6).
    """

    teacher: SuccessorConfig = field(
        default_factory=lambda: SuccessorConfig(
            validation_fraction=0.2, validation_metric="accuracy"
        )
    )
    successor: SuccessorConfig = field(default_factory=SuccessorConfig)
    filter: str = "uncertainty"
    pool_sample: int | None = None
    seed: int = 0
    teacher_model: str | None = None
    successor_model: str | None = None

    def __post_init__(self) -> None:
        if self.filter not in FILTERS:
            raise InvalidArgumentError(
                f"unknown PLASM filter {self.filter!r}; choose one of {', '.join(FILTERS)}"
            )
        if not self.teacher.validation_fraction > 0:
            raise InvalidArgumentError(
                "PLASM's teacher needs held-out labels to score itself: set "
                "teacher.validation_fraction > 0 (0.2 in the default)"
            )
        if self.pool_sample is not None and self.pool_sample < 1:
            raise InvalidArgumentError(
                f"pool_sample must be >= 1 (or None for the whole pool), got {self.pool_sample}"
            )


@dataclass(frozen=True)
class PlasmReport:
    """What PLASM did, for the run record.

    `pseudo_accuracy_all`/`_kept` compare the pseudo-labels with gold where the caller
    knows it (a simulation); None otherwise. Seconds per step.
    """

    filter: str
    gold: int
    candidates: int
    kept: int
    kept_fraction: float
    teacher_heldout: int
    teacher_heldout_accuracy: float
    chance: float
    uncertainty_threshold: float | None
    pseudo_accuracy_all: float | None
    pseudo_accuracy_kept: float | None
    teacher_s: float
    pseudo_label_s: float
    filter_s: float
    successor_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PlasmResult:
    """The successor trained on gold + kept pseudo-labels, the teacher, and the record.
    `kept_positions`/`kept_labels` index the `pool_texts` given to `run_plasm`."""

    successor: Successor
    teacher: Successor
    report: PlasmReport
    kept_positions: npt.NDArray[np.int64]
    kept_labels: npt.NDArray[np.int64]


def heldout_score(
    teacher: Successor, texts: Sequence[str], labels: Sequence[int], num_classes: int
) -> tuple[int, float, float]:
    """The teacher's accuracy on the labels it held out, and chance there → (n, acc, chance).

    Chance is the larger of 1/num_classes and the held-out majority class's share."""
    history = teacher.history
    if history is None or not history.validation_indices:
        raise InvalidArgumentError("the teacher was trained without held-out labels")
    idx = list(history.validation_indices)
    gold = np.asarray([labels[i] for i in idx], dtype=np.int64)
    predicted = teacher.predict([texts[i] for i in idx])
    accuracy = float((predicted == gold).mean())
    majority = float(np.bincount(gold, minlength=num_classes).max() / len(gold))
    return len(idx), accuracy, max(1.0 / num_classes, majority)


def uncertainty_keep(
    proba: npt.NDArray[np.float32], fraction: float
) -> tuple[npt.NDArray[np.int64], float]:
    """Positions of the round(fraction * n) least uncertain rows of proba (n, C), ascending,
    and the uncertainty threshold they fall under (the largest kept uncertainty)."""
    u = least_confidence(proba)
    k = round(fraction * len(u))
    if k == 0:
        return np.zeros(0, dtype=np.int64), 0.0
    order = np.argsort(u, kind="stable")[:k]
    return np.sort(order).astype(np.int64), float(u[order[-1]])


def cleanlab_keep(
    features: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], seed: int
) -> npt.NDArray[np.int64]:
    """Positions whose label confident learning does not flag: out-of-sample probabilities
    from 5-fold logistic regression on features (n, d) → `cleanlab.filter.find_label_issues`."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    present, y = np.unique(labels, return_inverse=True)
    if len(present) < 2:
        return np.arange(len(labels), dtype=np.int64)  # one class: nothing to disagree with
    folds = int(min(5, np.bincount(y).min()))
    if folds < 2:  # a class with one member cannot be cross-validated: keep it unjudged
        judged = ~np.isin(y, np.flatnonzero(np.bincount(y) < 2))
        kept = cleanlab_keep(features[judged], labels[judged], seed)
        both = np.concatenate([np.flatnonzero(judged)[kept], np.flatnonzero(~judged)])
        return np.sort(both).astype(np.int64)
    proba = cross_val_predict(
        LogisticRegression(C=10.0, max_iter=300),
        features,
        y,
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        method="predict_proba",
    )
    issues = find_label_issues(
        labels=y, pred_probs=proba, filter_by="prune_by_noise_rate", n_jobs=1
    )
    return np.flatnonzero(~issues).astype(np.int64)


def _staged(progress: Progress, stage: str) -> Progress:
    """`progress`, with a callback's step phases prefixed by `stage` ("teacher/ft")."""
    if not callable(progress):
        return progress
    callback = progress
    return lambda step: callback(replace(step, phase=f"{stage}/{step.phase}"))


@dataclass(frozen=True)
class _Pseudo:
    """Pseudo-labels of the sampled pool texts (`positions` into pool_texts, `labels`), the
    kept ones (`keep` indexes both), and the filter's record."""

    positions: npt.NDArray[np.int64]
    texts: list[str]
    labels: npt.NDArray[np.int64]
    keep: npt.NDArray[np.int64]
    threshold: float | None
    pseudo_label_s: float
    filter_s: float


def _pseudo_label(
    teacher: Successor, pool_texts: Sequence[str], accuracy: float, config: PlasmConfig
) -> _Pseudo:
    """Sample the pool, pseudo-label it with the teacher and filter the pseudo-labels."""
    rng = np.random.default_rng(config.seed)
    positions = np.arange(len(pool_texts), dtype=np.int64)
    if config.pool_sample is not None and config.pool_sample < len(pool_texts):
        positions = np.sort(rng.choice(positions, size=config.pool_sample, replace=False))
    texts = [pool_texts[i] for i in positions.tolist()]
    t0 = time.perf_counter()
    proba = teacher.predict_proba(texts)
    pseudo = proba.argmax(axis=1).astype(np.int64)
    pseudo_label_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    threshold: float | None = None
    if config.filter == "uncertainty":
        keep, threshold = uncertainty_keep(proba, accuracy)
    elif config.filter == "cleanlab":
        keep = cleanlab_keep(teacher.encode(texts), pseudo, config.seed)
    else:
        keep = np.arange(len(texts), dtype=np.int64)
    return _Pseudo(
        positions, texts, pseudo, keep, threshold, pseudo_label_s, time.perf_counter() - t0
    )


def run_plasm(
    gold_texts: Sequence[str],
    gold_labels: Sequence[int],
    pool_texts: Sequence[str],
    num_classes: int,
    config: PlasmConfig | None = None,
    pool_gold: Sequence[int] | None = None,
    progress: Progress = False,
    teacher: Successor | None = None,
) -> PlasmResult:
    """Teacher on gold → pseudo-label `pool_texts` (the unlabeled pool) → filter → successor
    on gold + kept pseudo-labels. `pool_gold` (same length as pool_texts), when known, only
    measures the pseudo-labels' accuracy; it never reaches training. `teacher`: one this
    function returned before for the same gold labels (to try another filter without
    training it again). A `progress` callback sees "teacher/..." then "successor/..." phases.

    Raises FailedPreconditionError when the teacher is not better than chance on its
    held-out labels, InvalidArgumentError for inconsistent inputs.
    """
    config = config or PlasmConfig()
    if pool_gold is not None and len(pool_gold) != len(pool_texts):
        raise InvalidArgumentError(
            f"pool_gold has {len(pool_gold)} labels for {len(pool_texts)} pool texts"
        )
    if not pool_texts:
        raise InvalidArgumentError("no unlabeled texts to pseudo-label")
    t0 = time.perf_counter()
    if teacher is None:
        teacher = fine_tune_successor(
            gold_texts,
            gold_labels,
            num_classes,
            replace(config.teacher, seed=config.seed),
            model_path=config.teacher_model,
            progress=_staged(progress, "teacher"),
        )
    n_heldout, accuracy, chance = heldout_score(teacher, gold_texts, gold_labels, num_classes)
    teacher_s = time.perf_counter() - t0
    if accuracy <= chance:
        raise FailedPreconditionError(
            f"PLASM refuses: the teacher's held-out accuracy {accuracy:.3f} on {n_heldout} "
            f"labels is not above chance {chance:.3f}, so its pseudo-labels would be mostly "
            "wrong; label more texts, or train the successor on the gold labels alone"
        )
    p = _pseudo_label(teacher, pool_texts, accuracy, config)
    all_acc = kept_acc = None
    if pool_gold is not None:
        truth = np.asarray([pool_gold[i] for i in p.positions.tolist()], dtype=np.int64)
        all_acc = float((p.labels == truth).mean())
        kept_acc = float((p.labels[p.keep] == truth[p.keep]).mean()) if len(p.keep) else None
    t0 = time.perf_counter()
    successor = fine_tune_successor(
        [*gold_texts, *(p.texts[i] for i in p.keep.tolist())],
        [*(int(v) for v in gold_labels), *p.labels[p.keep].tolist()],
        num_classes,
        replace(config.successor, seed=config.seed),
        model_path=config.successor_model,
        progress=_staged(progress, "successor"),
    )
    report = PlasmReport(
        filter=config.filter,
        gold=len(gold_texts),
        candidates=len(p.texts),
        kept=len(p.keep),
        kept_fraction=len(p.keep) / len(p.texts),
        teacher_heldout=n_heldout,
        teacher_heldout_accuracy=accuracy,
        chance=chance,
        uncertainty_threshold=p.threshold,
        pseudo_accuracy_all=all_acc,
        pseudo_accuracy_kept=kept_acc,
        teacher_s=teacher_s,
        pseudo_label_s=p.pseudo_label_s,
        filter_s=p.filter_s,
        successor_s=time.perf_counter() - t0,
    )
    return PlasmResult(successor, teacher, report, p.positions[p.keep], p.labels[p.keep])


def model_name(path: str | Path | None) -> str:
    """A short architecture name for records: the checkpoint directory's name, or minilm-l6."""
    return "minilm-l6" if path is None else Path(path).name
