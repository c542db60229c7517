"""Fine-tuned-acquisition AL: the standard baseline the proxy loop is measured against.

A benchmark baseline (bench/evidence.py), not a method the service offers: it lives here and
keeps its results in memory; it writes no session, label or round to a store.

Every round a transformer is fine-tuned on the labels so far with the successor recipe
(`successor.training.fine_tune_successor`: full, lora, lp_ft, or any other method the
successor accepts), it scores the unlabeled pool from its predicted probabilities and the
next batch is the top k by the same scores and seeded tie-break as the proxy's strategies
(`proxal.runtime.uncertainty`, `proxal.runtime.ranking.top_k`). The initial set is the one
`engine.simulation` draws for the same seed, so the two loops are comparable. Because
each round's model is trained exactly as a successor would be, its test metrics are those of
the successor at that label budget; the loop also trains after the last selection, so the
final budget has a model too.

With a `UpsSchedule` only part of the pool is re-scored on non-full rounds: the top `gamma`
by last score plus a rank-tempered sample (`proxal.runtime.subsampling.ups_keep`, the
sampler the proxy uses). Random selection needs no model scores and never subsamples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.analysis.evaluation import test_scores
from proxal.orchestrator_service.engine.ups import UpsSchedule
from proxal.orchestrator_service.successor.training import (
    Successor,
    SuccessorConfig,
    fine_tune_successor,
)
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.ranking import id_uniform, top_k
from proxal.runtime.subsampling import sort_by_id, ups_keep
from proxal.runtime.uncertainty import UNCERTAINTY_SCORES, uncertainty

RANDOM = "random"
STRATEGIES = (RANDOM, *UNCERTAINTY_SCORES)


@dataclass(frozen=True)
class FinetunedLoopConfig:
    """One fine-tuned AL run; label budget = initial_size + rounds * batch_size.

    `successor` is the fine-tuning recipe of every round's model; its seed is replaced by
    seed * 1000 + round (the proxy loop's round seed), which also seeds the tie-break.
    `evaluate`: score each round's model on the test split (off: metrics are empty).
    """

    strategy: str = "margin"
    seed: int = 0
    initial_size: int = 100
    batch_size: int = 100
    rounds: int = 10
    successor: SuccessorConfig = field(default_factory=SuccessorConfig)
    ups: UpsSchedule | None = None
    evaluate: bool = True

    @property
    def budget(self) -> int:
        return self.initial_size + self.rounds * self.batch_size

    def validate(self, pool_size: int) -> None:
        """InvalidArgumentError unless the strategy is known and the budget fits the pool."""
        if self.strategy not in STRATEGIES:
            raise InvalidArgumentError(
                f"unknown strategy {self.strategy!r} for the fine-tuned loop; "
                f"valid strategies: {', '.join(STRATEGIES)}"
            )
        if self.initial_size < 1 or self.batch_size < 1 or self.rounds < 0:
            raise InvalidArgumentError(
                f"initial_size and batch_size must be >= 1 and rounds >= 0, got "
                f"{self.initial_size}, {self.batch_size} and {self.rounds}"
            )
        if self.ups is not None:
            self.ups.validate()
        if pool_size == 0:
            raise InvalidArgumentError("the pool is empty: pass the unlabeled texts to select from")
        if self.budget > pool_size:
            raise InvalidArgumentError(
                f"label budget {self.budget} (initial {self.initial_size} + {self.rounds} "
                f"rounds x {self.batch_size}) exceeds the pool's {pool_size} texts; lower it "
                "or pass a larger pool"
            )


@dataclass(frozen=True)
class FinetunedRound:
    """One round: the model trained on `labels` texts, and the batch it selected.

    `accuracy`/`macro_f1` are that model's test scores (None when not evaluated);
    `scored` is how many pool texts it scored (0 for random and for the last round), and
    `subsampled` whether UPS narrowed them. Times are seconds.
    """

    round: int
    labels: int
    selected_ids: list[int]
    accuracy: float | None
    macro_f1: float | None
    train_s: float
    eval_s: float
    score_s: float
    select_s: float
    scored: int
    subsampled: bool


@dataclass
class FinetunedResult:
    """Every round in order, the labeled ids (initial set first, then each batch) and wall time."""

    rounds: list[FinetunedRound] = field(default_factory=list)
    label_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    wall_s: float = 0.0

    def as_rows(self) -> list[dict[str, object]]:
        return [asdict(r) for r in self.rounds]


def _check_inputs(
    pool_ids: npt.NDArray[np.int64],
    pool_texts: Sequence[str],
    pool_gold: npt.NDArray[np.int32],
    test_texts: Sequence[str],
    test_gold: npt.NDArray[np.int32],
    num_classes: int,
    evaluate: bool,
) -> None:
    if num_classes < 2:
        raise InvalidArgumentError(f"num_classes must be >= 2, got {num_classes}")
    if not len(pool_ids) == len(pool_texts) == len(pool_gold):
        raise InvalidArgumentError(
            f"the pool has {len(pool_ids)} ids, {len(pool_texts)} texts and {len(pool_gold)} "
            "gold labels; pass one text and one label per id"
        )
    if len(np.unique(pool_ids)) != len(pool_ids):
        raise InvalidArgumentError("pool ids must be unique")
    for name, gold in (("pool", pool_gold), ("test", test_gold)):
        if len(gold) and (gold.min() < 0 or gold.max() >= num_classes):
            raise InvalidArgumentError(
                f"{name} gold labels must be class ids in [0, {num_classes}); map names to ids"
            )
    if len(test_texts) != len(test_gold):
        raise InvalidArgumentError(
            f"got {len(test_texts)} test texts but {len(test_gold)} test labels"
        )
    if evaluate and not len(test_texts):
        raise InvalidArgumentError("evaluate=True needs test texts; pass some or set it False")


@dataclass
class _LoopState:
    """Positions (into the pool arrays) labelled so far, in order, and each text's last score."""

    labeled: npt.NDArray[np.intp]
    is_labeled: npt.NDArray[np.bool_]
    last_score: npt.NDArray[np.float32]  # UPS: NaN = never scored

    @classmethod
    def start(cls, pool_ids: npt.NDArray[np.int64], seed: int, initial_size: int) -> _LoopState:
        """The initial set `engine.simulation` draws for the same seed."""
        initial = np.random.default_rng(seed).choice(pool_ids, size=initial_size, replace=False)
        position_of = {int(i): p for p, i in enumerate(pool_ids.tolist())}
        labeled = np.array([position_of[int(i)] for i in initial], dtype=np.intp)
        is_labeled = np.zeros(len(pool_ids), dtype=bool)
        is_labeled[labeled] = True
        return cls(labeled, is_labeled, np.full(len(pool_ids), np.nan, dtype=np.float32))

    def add(self, selected: npt.NDArray[np.intp]) -> None:
        self.labeled = np.concatenate([self.labeled, selected])
        self.is_labeled[selected] = True


@dataclass(frozen=True)
class _Pool:
    ids: npt.NDArray[np.int64]  # (N,)
    texts: Sequence[str]  # N texts
    gold: npt.NDArray[np.int32]  # (N,) class ids


def run_finetuned_al(
    pool_ids: npt.NDArray[np.int64],
    pool_texts: Sequence[str],
    pool_gold: npt.NDArray[np.int32],
    test_texts: Sequence[str],
    test_gold: npt.NDArray[np.int32],
    num_classes: int,
    config: FinetunedLoopConfig,
    on_round: Callable[[FinetunedRound], None] | None = None,
) -> FinetunedResult:
    """Run one simulated fine-tuned AL loop; gold labels (class ids) play the annotator.

    pool_ids (N,) unique with texts and gold (N,); test texts and gold (T,).
    """
    pool = _Pool(
        np.asarray(pool_ids, dtype=np.int64), pool_texts, np.asarray(pool_gold, dtype=np.int32)
    )
    test_gold = np.asarray(test_gold, dtype=np.int32)
    config.validate(len(pool.ids))
    _check_inputs(
        pool.ids, pool.texts, pool.gold, test_texts, test_gold, num_classes, config.evaluate
    )
    start = time.perf_counter()
    state = _LoopState.start(pool.ids, config.seed, config.initial_size)
    result = FinetunedResult()
    for rnd in range(config.rounds + 1):
        record, selected = _round(pool, state, test_texts, test_gold, num_classes, config, rnd)
        result.rounds.append(record)
        if on_round is not None:
            on_round(record)
        state.add(selected)
    result.label_ids = pool.ids[state.labeled]
    result.wall_s = time.perf_counter() - start
    return result


def _round(
    pool: _Pool,
    state: _LoopState,
    test_texts: Sequence[str],
    test_gold: npt.NDArray[np.int32],
    num_classes: int,
    config: FinetunedLoopConfig,
    rnd: int,
) -> tuple[FinetunedRound, npt.NDArray[np.intp]]:
    """Train on the labels so far, evaluate, and (but on the last round) pick the next batch."""
    t0 = time.perf_counter()
    round_seed = config.seed * 1000 + rnd
    model = fine_tune_successor(
        [pool.texts[int(p)] for p in state.labeled],
        [int(g) for g in pool.gold[state.labeled]],
        num_classes,
        replace(config.successor, seed=round_seed),
        progress=False,
    )
    trained = time.perf_counter()
    metrics: dict[str, float] = {}
    if config.evaluate:
        predicted = model.predict_proba(list(test_texts)).argmax(axis=1)
        metrics = test_scores(test_gold, predicted, num_classes)
    evaluated = time.perf_counter()
    selected = np.zeros(0, dtype=np.intp)
    scored, subsampled, select_s = 0, False, 0.0
    if rnd < config.rounds:
        selected, scored, subsampled, select_s = _select(pool, state, model, config, rnd)
    record = FinetunedRound(
        round=rnd,
        labels=len(state.labeled),
        selected_ids=pool.ids[selected].tolist(),
        accuracy=metrics.get("accuracy"),
        macro_f1=metrics.get("macro_f1"),
        train_s=trained - t0,
        eval_s=evaluated - trained,
        score_s=time.perf_counter() - evaluated - select_s,
        select_s=select_s,
        scored=scored,
        subsampled=subsampled,
    )
    return record, selected


def _select(
    pool: _Pool, state: _LoopState, model: Successor, config: FinetunedLoopConfig, rnd: int
) -> tuple[npt.NDArray[np.intp], int, bool, float]:
    """(positions picked, texts scored, UPS subsampled?, seconds of top-k) for one round."""
    round_seed = config.seed * 1000 + rnd
    candidates = np.flatnonzero(~state.is_labeled)
    scored, subsampled = 0, False
    if config.strategy == RANDOM:
        scores = id_uniform(pool.ids[candidates], round_seed)
    else:
        candidates, subsampled = _ups_candidates(pool, state, candidates, config, rnd)
        proba = model.predict_proba([pool.texts[int(p)] for p in candidates])
        scores = uncertainty(config.strategy, proba)
        state.last_score[candidates] = scores
        scored = len(candidates)
    t_sel = time.perf_counter()
    best = top_k(scores, pool.ids[candidates], config.batch_size, round_seed)
    return candidates[best], scored, subsampled, time.perf_counter() - t_sel


def _ups_candidates(
    pool: _Pool,
    state: _LoopState,
    candidates: npt.NDArray[np.intp],
    config: FinetunedLoopConfig,
    rnd: int,
) -> tuple[npt.NDArray[np.intp], bool]:
    """The candidates to re-score this round, and whether UPS narrowed them."""
    ups = config.ups
    if ups is None or ups.is_full(rnd):
        return candidates, False
    known = ~np.isnan(state.last_score[candidates])
    if not known.any():
        return candidates, False
    prev_ids, prev_scores = sort_by_id(
        pool.ids[candidates[known]], state.last_score[candidates[known]]
    )
    keep = ups_keep(
        pool.ids[candidates],
        prev_ids,
        prev_scores,
        ups.gamma,
        ups.temperature,
        config.seed * 1000 + rnd,
    )
    if keep.sum() < config.batch_size:  # too few kept: re-score everything
        return candidates, False
    return candidates[keep], True
