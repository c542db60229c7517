"""Simulations: the engine (`engine.loop`) with an oracle that reads gold labels.

For each (strategy, seed) a session starts from the same seeded random initial set, then
alternates: fit the proxy and evaluate it on the test split -> select a batch (the engine's
next batch, as for a live session) -> the oracle labels it. Every call to the proxy goes
through the selector; every label and round is written to the store by the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.analysis.evaluation import test_scores
from proxal.orchestrator_service.analysis.runs import RoundRow, Run, SessionInfo, pool_fingerprint
from proxal.orchestrator_service.engine.feature_checks import AsvpRuntime
from proxal.orchestrator_service.engine.loop import Engine, Round, SessionConfig
from proxal.orchestrator_service.engine.selectors import ClassifierSpec, Selector, TrainingSet
from proxal.orchestrator_service.engine.ups import UpsSchedule
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.strategies import DEFAULT_INITIAL_BATCH, check_initial_batch
from proxal.store import Store

if TYPE_CHECKING:  # ASVP fine-tunes with torch: imported only when a loop uses it
    from proxal.orchestrator_service.engine.asvp import AlignmentDecision, AsvpConfig


@dataclass(frozen=True)
class LoopConfig:
    """How the simulated loop runs; label budget = initial_size + rounds * batch_size.

    Margin, proxal's default strategy, comes first; the others are what it is compared to.
    """

    strategies: tuple[str, ...] = ("margin", "least_confidence", "entropy", "random")
    seeds: tuple[int, ...] = (0, 1, 2)
    initial_size: int = 100
    batch_size: int = 100
    rounds: int = 10
    classifier_c: float = 10.0
    classifier_max_iter: int = 300
    ups: UpsSchedule | None = None  # subsample the pool for pointwise strategies
    asvp: AsvpConfig | None = None  # refresh the features from fine-tuned checkpoints
    initial_batch: str = DEFAULT_INITIAL_BATCH  # "kmeans": diverse batches until 2 classes
    class_balanced: bool = False  # spread each batch over the predicted classes

    def validate(self, pool_size: int) -> None:
        if not self.strategies:
            raise InvalidArgumentError("name at least one strategy")
        if self.initial_size < 0 or self.batch_size < 1 or self.rounds < 0:
            raise InvalidArgumentError(
                "initial_size must be >= 0 (0: a cold start), batch_size >= 1 and rounds >= 0"
            )
        check_initial_batch(self.initial_batch)
        if self.ups is not None:
            self.ups.validate()
        if self.asvp is not None:
            self.asvp.validate()
        budget = self.initial_size + self.rounds * self.batch_size
        if budget > pool_size:
            raise InvalidArgumentError(
                f"label budget {budget} (initial {self.initial_size} + {self.rounds} rounds x "
                f"{self.batch_size}) exceeds the pool's {pool_size} rows; lower it"
            )


@dataclass
class SimulationResult:
    """Every round of every session (`points`), the sessions' seeded initial sets, each
    session's final labels, and the loop's wall time; `to_run` makes it a run directory."""

    points: list[RoundRow] = field(default_factory=list)
    sessions: list[SessionInfo] = field(default_factory=list)
    final_labels: dict[tuple[str, int], tuple[npt.NDArray[np.int64], list[str]]] = field(
        default_factory=dict
    )
    wall_s: float = 0.0
    # ASVP: every check of each (strategy, seed) session, in round order.
    alignment: dict[tuple[str, int], list[AlignmentDecision]] = field(default_factory=dict)

    def as_rows(self) -> list[dict[str, object]]:
        return [asdict(p) for p in self.points]

    def to_run(self, store: Store, data: PoolData, run_name: str, **manifest: Any) -> Run:
        """This result as a `Run` (write it with `analysis.runs.write_run`); `manifest`
        fills the optional fields (dataset, encoder, embed_s, config)."""
        return Run(
            name=run_name,
            pool=data.pool,
            pool_fingerprint=pool_fingerprint(store, data.pool),
            store=store.uri if "://" in store.uri else str(Path(store.uri).resolve()),
            embedding_version=data.version,
            classes=list(data.classes),
            sessions=list(self.sessions),
            rounds=list(self.points),
            **manifest,
        )

    def successor_method(self, strategy: str, seed: int) -> tuple[str, str]:
        """The method ASVP's last check chose for this session's successor → (method, why)."""
        decisions = [d for d in self.alignment.get((strategy, seed), []) if d.action != "skip"]
        if not decisions:
            return "full", "no ASVP check ran: plain fine-tuning"
        return decisions[-1].successor_method, decisions[-1].successor_reason


@dataclass(frozen=True)
class PoolData:
    """What the loop needs of a pool: train ids/gold and test ids/gold as class indices."""

    pool: str
    version: str
    classes: list[str]
    train_ids: npt.NDArray[np.int64]
    train_gold: npt.NDArray[np.int32]
    test_ids: npt.NDArray[np.int64]
    test_gold: npt.NDArray[np.int32]

    @classmethod
    def from_store(cls, store: Store, pool: str, version: str) -> PoolData:
        store.get_version(pool, version)  # NotFound / FailedPrecondition early
        classes = store.pool_info(pool).classes
        index = {c: i for i, c in enumerate(classes)}

        def split(name: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
            rows = store.pool_rows(pool, split=name, columns=["id", "label"])
            if rows.num_rows == 0:
                raise InvalidArgumentError(f"pool {pool!r} has no {name!r} split")
            gold = rows.column("label").to_pylist()
            if any(g is None for g in gold):
                raise InvalidArgumentError(
                    f"simulation needs gold labels on every {name!r} row of pool {pool!r}"
                )
            return (
                rows.column("id").to_numpy().astype(np.int64),
                np.array([index[g] for g in gold], dtype=np.int32),
            )

        train_ids, train_gold = split("train")
        test_ids, test_gold = split("test")
        return cls(pool, version, classes, train_ids, train_gold, test_ids, test_gold)


def run_simulation(
    store: Store,
    proxy: Selector,
    data: PoolData,
    config: LoopConfig,
    run_name: str,
    on_round: Callable[[RoundRow], None] | None = None,
    asvp: AsvpRuntime | None = None,
) -> SimulationResult:
    """Run every (strategy, seed) session on the engine with an oracle; returns the
    learning-curve points.

    With `config.asvp` (which needs `asvp`), each session checks its features on the ASVP
    schedule before fitting (inline, so results are deterministic) and, after a refresh,
    selects on the new embedding version.
    """
    config.validate(len(data.train_ids))
    if config.asvp is not None and asvp is None:
        raise InvalidArgumentError(
            "config.asvp is set but no AsvpRuntime (encoder, checkpoint root, texts) was given"
        )
    engine = Engine(store, proxy, asvp, background=False)
    result = SimulationResult()
    start = time.perf_counter()
    for seed in config.seeds:
        rng = np.random.default_rng(seed)
        initial = rng.choice(data.train_ids, size=config.initial_size, replace=False)
        for strategy in config.strategies:
            oracle = Oracle(
                engine, proxy, data, config, f"{run_name}-{strategy.replace('_', '-')}-s{seed}"
            )
            oracle.run(strategy, seed, [int(i) for i in initial], result, on_round)
    result.wall_s = time.perf_counter() - start
    return result


class Oracle:
    """An annotator that reads gold labels: one simulated session on the engine."""

    def __init__(
        self, engine: Engine, proxy: Selector, data: PoolData, config: LoopConfig, session: str
    ) -> None:
        self.engine = engine
        self.proxy = proxy
        self.data = data
        self.config = config
        self.session = session
        self.spec = ClassifierSpec(
            kind="logreg", c=config.classifier_c, max_iter=config.classifier_max_iter
        )
        self.gold_of = dict(zip(data.train_ids.tolist(), data.train_gold.tolist(), strict=True))

    def run(
        self,
        strategy: str,
        seed: int,
        labeled: list[int],
        result: SimulationResult,
        on_round: Callable[[RoundRow], None] | None,
    ) -> None:
        """Create the session, label the initial set, then alternate evaluate -> select ->
        label for config.rounds rounds and a last evaluation-only round."""
        data, config = self.data, self.config
        self.engine.create(
            SessionConfig(
                self.session,
                data.pool,
                tuple(data.classes),
                strategy,
                config.batch_size,
                seed,
                "train",
                self.spec,
                ups=config.ups,
                asvp=config.asvp,
                extra={"simulated": True, **asdict(config)},
                initial_batch=config.initial_batch,
                class_balanced=config.class_balanced,
            ),
            data.version,
        )
        self.label(labeled)
        result.sessions.append(SessionInfo(strategy, seed, self.session, tuple(labeled)))
        for rnd in range(config.rounds + 1):
            t0 = time.perf_counter()
            chosen = self.engine.next_batch(
                self.session, config.batch_size, None, self.evaluate, select=rnd < config.rounds
            )
            self.label(list(chosen.ids))
            point = _point(strategy, seed, rnd, len(labeled), chosen, time.perf_counter() - t0)
            result.points.append(point)
            if on_round is not None:
                on_round(point)
            labeled.extend(chosen.ids)
        result.final_labels[(strategy, seed)] = (
            np.array(labeled, dtype=np.int64),
            [data.classes[self.gold_of[i]] for i in labeled],
        )
        if config.asvp is not None:
            result.alignment[(strategy, seed)] = self.engine.checks.decisions(self.session)

    def label(self, ids: list[int]) -> None:
        if ids:
            labels = [self.data.classes[self.gold_of[i]] for i in ids]
            self.engine.oracle_labels(self.session, self.data.pool, ids, labels)

    def evaluate(self, version: str, training: TrainingSet, seed: int) -> dict[str, float]:
        """The round's proxy scored on the test split. Before two classes are labelled no
        proxy can be fitted: the score is that of always answering the one class seen (of
        answering none, scoring 0, before any label)."""
        data = self.data
        seen = np.unique(training.labels)
        if len(seen) < 2:
            guess = int(seen[0]) if len(seen) else -1
            constant = np.full(len(data.test_ids), guess)
            return test_scores(data.test_gold, constant, len(data.classes))
        predicted = self.proxy.predict(
            data.pool, version, training, data.test_ids, seed=seed, classifier=self.spec
        )
        return test_scores(data.test_gold, predicted, len(data.classes))


def _point(
    strategy: str, seed: int, rnd: int, labels: int, chosen: Round, elapsed: float
) -> RoundRow:
    """A round of the learning curve, with its timings."""
    timings = chosen.selection.timings if chosen.selection is not None else {}
    decision = chosen.decision
    return RoundRow(
        strategy,
        seed,
        rnd,
        labels,
        chosen.metrics["accuracy"],
        chosen.metrics["macro_f1"],
        selected_ids=chosen.ids,
        embed_s=decision.refresh_s if decision is not None else 0.0,
        load_s=timings.get("load_s", 0.0),
        fit_s=timings.get("fit_s", 0.0),
        score_s=timings.get("score_s", 0.0) + timings.get("select_s", 0.0),
        finetune_s=decision.finetune_s + decision.logme_s if decision is not None else 0.0,
        round_s=elapsed,
        embedding_version=chosen.version,
    )
