"""Fine-tuned-acquisition AL: the standard baseline the proxy loop is measured against.

Every round a transformer is fine-tuned on the labels so far with the successor recipe
(`orchestrator.successor.fine_tune_successor`: full, lora, lp_ft, or any other method the
successor accepts), it scores the unlabeled pool from its predicted probabilities and the
next batch is the top k by the same scores and seeded tie-break as the proxy's strategies
(`proxal_runtime.uncertainty`, `proxal_runtime.ranking.top_k`). The initial set is the one
`orchestrator.simulation` draws for the same seed, so the two loops are comparable. Because
each round's model is trained exactly as a successor would be, its test metrics are those of
the successor at that label budget; the loop also trains after the last selection, so the
final budget has a model too.

With a `UpsSchedule` only part of the pool is re-scored on non-full rounds: the top `gamma`
by last score plus a rank-tempered sample (`proxal_runtime.subsampling.ups_keep`, the
sampler the proxy uses). Random selection needs no model scores and never subsamples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import numpy.typing as npt

from orchestrator.evaluation import test_scores
from orchestrator.successor import SuccessorConfig, fine_tune_successor
from orchestrator.ups import UpsSchedule
from proxal_runtime.errors import InvalidArgumentError, NotFoundError
from proxal_runtime.ranking import id_uniform, top_k
from proxal_runtime.subsampling import sort_by_id, ups_keep
from proxal_runtime.uncertainty import UNCERTAINTY_SCORES, uncertainty
from proxal_store import RoundRecord, SessionRecord, Store

RANDOM = "random"
STRATEGIES = (RANDOM, *UNCERTAINTY_SCORES)
EMBEDDING_VERSION = "finetuned"  # what rounds record in place of a proxy's embedding version


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


@dataclass(frozen=True)
class StoreTarget:
    """Where a run's labels and rounds go: `session` on `pool`; class i is `class_names[i]`."""

    store: Store
    session: str
    pool: str
    class_names: Sequence[str]


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


def _open_session(target: StoreTarget, config: FinetunedLoopConfig) -> None:
    try:
        target.store.get_session(target.session)
    except NotFoundError:
        target.store.create_session(
            SessionRecord(
                session=target.session,
                pool=target.pool,
                embedding_version=EMBEDDING_VERSION,
                strategy=config.strategy,
                batch_size=config.batch_size,
                seed=config.seed,
                # classes: what OrchestratorService needs to serve the session
                config={
                    "simulated": True,
                    "finetuned": True,
                    **asdict(config),
                    "classes": list(target.class_names),
                },
            )
        )


def run_finetuned_al(
    pool_ids: npt.NDArray[np.int64],
    pool_texts: Sequence[str],
    pool_gold: npt.NDArray[np.int32],
    test_texts: Sequence[str],
    test_gold: npt.NDArray[np.int32],
    num_classes: int,
    config: FinetunedLoopConfig,
    target: StoreTarget | None = None,
    on_round: Callable[[FinetunedRound], None] | None = None,
) -> FinetunedResult:
    """Run one simulated fine-tuned AL loop; gold labels (class ids) play the annotator.

    pool_ids (N,) unique with texts and gold (N,); test texts and gold (T,). With a
    `target`, the session is created if missing, labels are appended (source "oracle") and
    each round is recorded like `orchestrator.simulation` does.
    """
    pool_ids = np.asarray(pool_ids, dtype=np.int64)
    pool_gold = np.asarray(pool_gold, dtype=np.int32)
    test_gold = np.asarray(test_gold, dtype=np.int32)
    config.validate(len(pool_ids))
    _check_inputs(
        pool_ids, pool_texts, pool_gold, test_texts, test_gold, num_classes, config.evaluate
    )
    if target is not None:
        if len(target.class_names) != num_classes:
            raise InvalidArgumentError(
                f"target.class_names names {len(target.class_names)} classes, expected "
                f"{num_classes}"
            )
        _open_session(target, config)

    def oracle(positions: npt.NDArray[np.intp]) -> None:
        if target is not None:
            target.store.append_labels(
                target.session,
                target.pool,
                pool_ids[positions].tolist(),
                [target.class_names[int(g)] for g in pool_gold[positions]],
                source="oracle",
            )

    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    initial = rng.choice(pool_ids, size=config.initial_size, replace=False)
    position_of = {int(i): p for p, i in enumerate(pool_ids.tolist())}
    labeled = np.array([position_of[int(i)] for i in initial], dtype=np.intp)
    is_labeled = np.zeros(len(pool_ids), dtype=bool)
    is_labeled[labeled] = True
    last_score = np.full(len(pool_ids), np.nan, dtype=np.float32)  # UPS: NaN = never scored
    oracle(labeled)
    result = FinetunedResult()
    for rnd in range(config.rounds + 1):
        t0 = time.perf_counter()
        round_seed = config.seed * 1000 + rnd
        model = fine_tune_successor(
            [pool_texts[int(p)] for p in labeled],
            [int(g) for g in pool_gold[labeled]],
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
            candidates = np.flatnonzero(~is_labeled)
            ups = config.ups
            if config.strategy == RANDOM:
                scores = id_uniform(pool_ids[candidates], round_seed)
            else:
                if ups is not None and not ups.is_full(rnd):
                    known = ~np.isnan(last_score[candidates])
                    if known.any():
                        prev_ids, prev_scores = sort_by_id(
                            pool_ids[candidates[known]], last_score[candidates[known]]
                        )
                        keep = ups_keep(
                            pool_ids[candidates],
                            prev_ids,
                            prev_scores,
                            ups.gamma,
                            ups.temperature,
                            round_seed,
                        )
                        if keep.sum() >= config.batch_size:  # else re-score everything
                            candidates, subsampled = candidates[keep], True
                proba = model.predict_proba([pool_texts[int(p)] for p in candidates])
                scores = uncertainty(config.strategy, proba)
                last_score[candidates] = scores
                scored = len(candidates)
            t_sel = time.perf_counter()
            best = top_k(scores, pool_ids[candidates], config.batch_size, round_seed)
            selected = candidates[best]
            select_s = time.perf_counter() - t_sel
        scored_at = time.perf_counter()
        record = FinetunedRound(
            round=rnd,
            labels=len(labeled),
            selected_ids=pool_ids[selected].tolist(),
            accuracy=metrics.get("accuracy"),
            macro_f1=metrics.get("macro_f1"),
            train_s=trained - t0,
            eval_s=evaluated - trained,
            score_s=scored_at - evaluated - select_s,
            select_s=select_s,
            scored=scored,
            subsampled=subsampled,
        )
        if len(selected):
            oracle(selected)
        if target is not None:
            spec: dict[str, object] = {
                "kind": "finetuned",
                "method": config.successor.method,
                "epochs": config.successor.epochs,
                "max_length": config.successor.max_length,
                "strategy": config.strategy,
            }
            if config.ups is not None:
                spec["ups"] = {**asdict(config.ups), "subsampled": subsampled, "scored": scored}
            target.store.record_round(
                RoundRecord(
                    session=target.session,
                    round=rnd,
                    strategy=config.strategy,
                    embedding_version=EMBEDDING_VERSION,
                    selected_ids=record.selected_ids,
                    labels_total=record.labels,
                    proxy_spec=spec,
                    scores_summary={"scored": scored},
                    timings={
                        "train_s": record.train_s,
                        "eval_s": record.eval_s,
                        "score_s": record.score_s,
                        "select_s": record.select_s,
                        "round_s": time.perf_counter() - t0,
                    },
                    metrics=metrics,
                )
            )
        result.rounds.append(record)
        if on_round is not None:
            on_round(record)
        labeled = np.concatenate([labeled, selected])
        is_labeled[selected] = True
    result.label_ids = pool_ids[labeled]
    result.wall_s = time.perf_counter() - start
    return result
