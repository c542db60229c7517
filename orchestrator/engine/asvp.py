"""ASVP feature alignment in the AL loop (Wen et al., arXiv 2403.01101).

Pre-computed pool embeddings go stale as labels accumulate. On a schedule (every
`AsvpConfig.every_rounds` rounds, or once the labeled set has grown by `growth_factor` since
the last check) `FeatureAligner.check`:

1. fine-tunes the encoder on the labels so far (LoRA by default: the adapters are merged
   afterwards, so the checkpoint is a plain encoder), holding out `validation_fraction` of the
   labels for early stopping and for the LP-FT/FT rule below;
2. scores the labeled set's current (pre-computed) features and the fine-tuned encoder's
   features with LogME, after the PED adjustment when `use_ped` (the LogME-PED of the paper);
3. when ``gap = logme(fine-tuned) - logme(current)`` exceeds `threshold`, saves the fine-tuned
   encoder under the encoder service's checkpoint root and asks the encoder service to
   re-embed the whole pool from it (RefreshFromCheckpoint); the loop then selects on the new
   embedding version.

The LP-FT vs FT rule: on the held-out labels, B1 counts texts the proxy classifies right but
the fine-tuned model gets wrong, B2 the reverse. Samples in B1 are pre-trained knowledge
that fine-tuning destroyed, so when B1 outnumbers B2 the successor should be trained with
LP-FT (which distorts the pre-trained features less), otherwise with plain fine-tuning.

Every decision (both scores, the gap, the threshold, the action, B1/B2 and the time each step
took) is returned as an `AlignmentDecision` for the rounds table and the report.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.engine.alignment import logme
from proxal.orchestrator_service.successor.config import SuccessorConfig
from proxal.runtime.errors import InvalidArgumentError

# Predicts class ids of `predict_ids` from a proxy fitted on (train_ids, train_labels).
ProxyPredict = Callable[
    [str, npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.int64]],
    npt.NDArray[np.int64],
]
# Re-embeds the pool from a checkpoint (relative to the checkpoint root) → the new version.
Refresh = Callable[[str, int, str], str]
# Reads the stored vectors of `ids` in `version` → float32 (len(ids), dim).
Lookup = Callable[[str, npt.NDArray[np.int64]], npt.NDArray[np.float32]]


def _acquisition_default() -> SuccessorConfig:
    return SuccessorConfig(method="lora", epochs=4, max_length=64, validation_fraction=0.2)


@dataclass(frozen=True)
class AsvpConfig:
    """When and how the loop checks its features.

    `every_rounds`: check at rounds R, 2R, ... (0: never by count). `growth_factor`: check when
    the labeled set is at least this many times as large as at the last check or at the
    start (0: never by growth; otherwise > 1). `threshold`: refresh when the LogME(-PED) gap
    exceeds it (the paper uses 0.03; finite, >= 0). `finetune`: the acquisition fine-tune
    (LoRA by default; its `validation_fraction` must be > 0 for the LP-FT/FT rule).
    `keep_checkpoints`: keep each refreshed checkpoint directory (else deleted once the new
    version is complete; the version's lineage keeps its hash).
    """

    every_rounds: int = 2
    growth_factor: float = 0.0
    threshold: float = 0.03
    use_ped: bool = True
    finetune: SuccessorConfig = field(default_factory=_acquisition_default)
    keep_checkpoints: bool = False

    def validate(self) -> None:
        if self.every_rounds < 0:
            raise InvalidArgumentError(
                f"asvp every_rounds must be >= 0 (0 = no count trigger), got {self.every_rounds}"
            )
        if self.growth_factor != 0 and not self.growth_factor > 1:
            raise InvalidArgumentError(
                f"asvp growth_factor must be 0 (off) or > 1, got {self.growth_factor}"
            )
        if self.every_rounds == 0 and self.growth_factor == 0:
            raise InvalidArgumentError(
                "asvp needs a trigger: set every_rounds >= 1 or growth_factor > 1"
            )
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise InvalidArgumentError(
                f"asvp threshold must be a finite LogME gap >= 0 (the paper uses 0.03), "
                f"got {self.threshold}"
            )
        if not self.finetune.validation_fraction > 0:
            raise InvalidArgumentError(
                "asvp finetune.validation_fraction must be > 0: the LP-FT/FT rule compares "
                "the proxy and the fine-tuned model on held-out labels"
            )


@dataclass(frozen=True)
class AlignmentDecision:
    """One ASVP check: scores, gap, action, the LP-FT/FT rule and timings (seconds)."""

    round: int
    labels: int
    version_before: str
    logme_current: float
    logme_finetuned: float
    gap: float
    threshold: float
    use_ped: bool
    action: str  # "refresh", "keep" or "skip" (too few labels to hold any out; see note)
    version_after: str
    b1_proxy_right_finetuned_wrong: int
    b2_finetuned_right_proxy_wrong: int
    held_out: int
    successor_method: str  # "lp_ft" or "full"
    successor_reason: str
    finetune_method: str
    finetune_s: float
    logme_s: float
    refresh_s: float
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict; the scores of a skipped check (NaN) become None."""
        return {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(self).items()
        }


def label_set_hash(ids: Sequence[int], labels: Sequence[int]) -> str:
    """sha256 of the sorted (id, label) pairs, as recorded in a refreshed version's lineage."""
    pairs = sorted(zip((int(i) for i in ids), (int(y) for y in labels), strict=True))
    return hashlib.sha256(repr(pairs).encode()).hexdigest()


def successor_rule(b1: int, b2: int) -> tuple[str, str]:
    """ASVP's LP-FT vs FT choice from B1 (proxy right, fine-tuned wrong) and B2 (reverse)."""
    if b1 > b2:
        return "lp_ft", (
            f"{b1} held-out texts the proxy gets right are lost by fine-tuning (vs {b2} "
            "gained): keep the pre-trained features with LP-FT"
        )
    return "full", (
        f"fine-tuning loses {b1} held-out texts the proxy gets right and gains {b2}: "
        "plain fine-tuning"
    )


class FeatureAligner:
    """Runs ASVP checks for one AL session; the domain parts come in as callables.

    `texts_of` maps pool ids to texts; `checkpoint_root` is the directory the encoder
    service resolves checkpoint names against (shared with it); `lookup(version, ids)` reads
    stored vectors; `proxy_predict(version, train_ids, train_labels, ids)` predicts with the
    loop's proxy; `refresh(checkpoint, label_count, label_set_hash)` re-embeds the pool.
    """

    def __init__(
        self,
        config: AsvpConfig,
        texts_of: Mapping[int, str],
        num_classes: int,
        checkpoint_root: Path,
        lookup: Lookup,
        proxy_predict: ProxyPredict,
        refresh: Refresh,
        name: str,
        initial_labels: int,
    ) -> None:
        config.validate()
        if not checkpoint_root.is_dir():
            raise InvalidArgumentError(
                f"asvp checkpoint root {checkpoint_root} is not a directory: create it and "
                "start the encoder service with --checkpoint-root pointing at it"
            )
        self.config = config
        self.texts_of = texts_of
        self.num_classes = num_classes
        self.checkpoint_root = checkpoint_root
        self.lookup = lookup
        self.proxy_predict = proxy_predict
        self.refresh = refresh
        self.name = name
        self.last_labels = initial_labels
        self.decisions: list[AlignmentDecision] = []

    def due(self, rnd: int, labels: int) -> bool:
        """Whether round `rnd` (with `labels` labels) checks the features."""
        every = self.config.every_rounds
        by_count = every > 0 and rnd > 0 and rnd % every == 0
        growth = self.config.growth_factor
        by_growth = growth > 0 and labels >= growth * self.last_labels
        return by_count or by_growth

    def check(
        self,
        rnd: int,
        version: str,
        ids: npt.NDArray[np.int64],
        labels: npt.NDArray[np.int32],
    ) -> AlignmentDecision:
        """Fine-tune on (ids, labels), compare LogME, refresh if the gap is large → decision."""
        from proxal.orchestrator_service.successor.training import (  # torch
            fine_tune_successor,
            validation_split,
        )

        missing = [int(i) for i in ids if int(i) not in self.texts_of]
        if missing:
            raise InvalidArgumentError(f"labeled ids {missing[:5]} have no text in the pool")
        texts = [self.texts_of[int(i)] for i in ids]
        cfg = self.config
        try:
            validation_split(labels.tolist(), cfg.finetune.validation_fraction, cfg.finetune.seed)
        except InvalidArgumentError as exc:  # too early: check again on the next schedule
            return self._record(_skipped(rnd, len(ids), version, cfg, str(exc)))
        t0 = time.perf_counter()
        model = fine_tune_successor(
            texts, [int(y) for y in labels], self.num_classes, cfg.finetune, progress=False
        )
        finetune_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        current = self.lookup(version, ids)
        tuned = model.encode(texts)
        score_current = logme(current, labels, self.num_classes, use_ped=cfg.use_ped)
        score_tuned = logme(tuned, labels, self.num_classes, use_ped=cfg.use_ped)
        gap = score_tuned - score_current
        logme_s = time.perf_counter() - t0

        b1, b2, held = self._held_out_rule(model, version, ids, labels, texts)
        method, reason = successor_rule(b1, b2)

        action, new_version, refresh_s = "keep", version, 0.0
        if gap > cfg.threshold:
            t0 = time.perf_counter()
            relative = Path("asvp") / self.name / f"round-{rnd}"
            directory = self.checkpoint_root / relative
            model.save(directory)
            try:
                new_version = self.refresh(
                    relative.as_posix(), len(ids), label_set_hash(ids.tolist(), labels.tolist())
                )
            finally:
                if not cfg.keep_checkpoints:
                    shutil.rmtree(directory, ignore_errors=True)
            action = "refresh"
            refresh_s = time.perf_counter() - t0
        self.last_labels = len(ids)
        return self._record(
            AlignmentDecision(
                round=rnd,
                labels=len(ids),
                version_before=version,
                logme_current=score_current,
                logme_finetuned=score_tuned,
                gap=gap,
                threshold=cfg.threshold,
                use_ped=cfg.use_ped,
                action=action,
                version_after=new_version,
                b1_proxy_right_finetuned_wrong=b1,
                b2_finetuned_right_proxy_wrong=b2,
                held_out=len(held),
                successor_method=method,
                successor_reason=reason,
                finetune_method=cfg.finetune.method,
                finetune_s=finetune_s,
                logme_s=logme_s,
                refresh_s=refresh_s,
            )
        )

    def _held_out_rule(
        self,
        model: Any,
        version: str,
        ids: npt.NDArray[np.int64],
        labels: npt.NDArray[np.int32],
        texts: list[str],
    ) -> tuple[int, int, npt.NDArray[np.int64]]:
        """The LP-FT/FT rule's counts on the labels the fine-tune held out → (B1, B2, held
        positions (h,))."""
        assert model.history is not None  # a freshly trained successor always has one
        held = np.asarray(model.history.validation_indices, dtype=np.int64)
        train = np.setdiff1d(np.arange(len(ids)), held)
        proxy_pred = self.proxy_predict(version, ids[train], labels[train], ids[held])
        tuned_pred = model.predict([texts[i] for i in held])
        truth = labels[held]
        b1 = int(np.sum((proxy_pred == truth) & (tuned_pred != truth)))
        b2 = int(np.sum((tuned_pred == truth) & (proxy_pred != truth)))
        return b1, b2, held

    def _record(self, decision: AlignmentDecision) -> AlignmentDecision:
        self.decisions.append(decision)
        return decision


def _skipped(
    rnd: int, labels: int, version: str, config: AsvpConfig, why: str
) -> AlignmentDecision:
    """The record of a check that could not run; the features stay as they are."""
    return AlignmentDecision(
        round=rnd,
        labels=labels,
        version_before=version,
        logme_current=math.nan,
        logme_finetuned=math.nan,
        gap=math.nan,
        threshold=config.threshold,
        use_ped=config.use_ped,
        action="skip",
        version_after=version,
        b1_proxy_right_finetuned_wrong=0,
        b2_finetuned_right_proxy_wrong=0,
        held_out=0,
        successor_method="full",
        successor_reason="no ASVP comparison yet: plain fine-tuning",
        finetune_method=config.finetune.method,
        finetune_s=0.0,
        logme_s=0.0,
        refresh_s=0.0,
        note=f"skipped: {why}",
    )
