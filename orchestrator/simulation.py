"""The simulated active-learning loop: gold labels play the annotator.

For each (strategy, seed) the loop starts from the same seeded random initial set, then
alternates: fit the proxy and evaluate it on the test split -> select a batch -> the oracle
labels it (appended to the store) -> record the round. Every call to the proxy goes over
gRPC; every label and round is written to the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from proxal.proxy.v1 import proxy_pb2

from orchestrator.clients import EncoderClient, ProxyClient, TrainingSet
from orchestrator.evaluation import test_scores
from orchestrator.runs import RoundRow, Run, SessionInfo, pool_fingerprint
from orchestrator.ups import ScoreTable, UpsSchedule
from proxal_runtime.errors import InvalidArgumentError
from proxal_store import RoundRecord, SessionRecord, Store

if TYPE_CHECKING:  # ASVP fine-tunes with torch: imported only when a loop uses it
    from orchestrator.asvp import AlignmentDecision, AsvpConfig, FeatureAligner


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

    def validate(self, pool_size: int) -> None:
        if not self.strategies:
            raise InvalidArgumentError("name at least one strategy")
        if self.initial_size < 1 or self.batch_size < 1 or self.rounds < 0:
            raise InvalidArgumentError("initial_size and batch_size must be >= 1 and rounds >= 0")
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
        """This result as a `Run` (write it with `orchestrator.runs.write_run`); `manifest`
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
class AsvpRuntime:
    """What ASVP needs beyond the proxy: the encoder, its checkpoint root, the pool's texts."""

    encoder: EncoderClient
    checkpoint_root: Path
    texts_of: Mapping[int, str]


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
    proxy: ProxyClient,
    data: PoolData,
    config: LoopConfig,
    run_name: str,
    on_round: Callable[[RoundRow], None] | None = None,
    asvp: AsvpRuntime | None = None,
) -> SimulationResult:
    """Run every (strategy, seed) loop; returns the learning-curve points.

    With `config.asvp` (which needs `asvp`), each session checks its features on the ASVP
    schedule before fitting and, after a refresh, selects on the new embedding version.
    """
    config.validate(len(data.train_ids))
    if config.asvp is not None and asvp is None:
        raise InvalidArgumentError(
            "config.asvp is set but no AsvpRuntime (encoder, checkpoint root, texts) was given"
        )
    spec = proxy_pb2.ClassifierSpec(
        kind="logreg", c=config.classifier_c, max_iter=config.classifier_max_iter
    )
    num_classes = len(data.classes)
    gold_of = dict(zip(data.train_ids.tolist(), data.train_gold.tolist(), strict=True))
    result = SimulationResult()
    start = time.perf_counter()
    for seed in config.seeds:
        rng = np.random.default_rng(seed)
        initial = rng.choice(data.train_ids, size=config.initial_size, replace=False)
        for strategy in config.strategies:
            session = f"{run_name}-{strategy.replace('_', '-')}-s{seed}"
            store.create_session(
                SessionRecord(
                    session=session,
                    pool=data.pool,
                    embedding_version=data.version,
                    strategy=strategy,
                    batch_size=config.batch_size,
                    seed=seed,
                    split="train",
                    # what OrchestratorService needs to serve the session (docs/sessions.md)
                    config={
                        "simulated": True,
                        **asdict(config),
                        "classes": list(data.classes),
                        "classifier": spec.kind,
                    },
                )
            )
            labeled = [int(i) for i in initial]
            previous = ScoreTable()  # UPS: the last score of each candidate
            version = data.version
            aligner = (
                _aligner(store, proxy, data, config.asvp, asvp, session, spec, seed, len(labeled))
                if config.asvp is not None and asvp is not None
                else None
            )
            store.append_labels(
                session,
                data.pool,
                labeled,
                [data.classes[gold_of[i]] for i in labeled],
                source="oracle",
            )
            result.sessions.append(SessionInfo(strategy, seed, session, tuple(labeled)))
            for rnd in range(config.rounds + 1):
                t0 = time.perf_counter()
                ids = np.array(labeled, dtype=np.int64)
                training = TrainingSet(
                    ids=ids,
                    labels=np.array([gold_of[i] for i in labeled], dtype=np.int32),
                    num_classes=num_classes,
                )
                round_seed = seed * 1000 + rnd  # the same for Predict and Select: one fit
                decision = None
                # Not on the last round: no selection follows that a refresh could improve.
                if aligner is not None and rnd < config.rounds and aligner.due(rnd, len(labeled)):
                    decision = aligner.check(rnd, version, training.ids, training.labels)
                    if decision.version_after != version:
                        version = decision.version_after
                        previous = ScoreTable()  # scores of the old features: rescore all
                predicted = proxy.predict(
                    data.pool,
                    version,
                    training,
                    data.test_ids,
                    seed=round_seed,
                    classifier=spec,
                )
                metrics = test_scores(data.test_gold, predicted, num_classes)
                selected: list[int] = []
                timings: dict[str, float] = {}
                proxy_spec: dict[str, object] = {"kind": "logreg", "c": config.classifier_c}
                if decision is not None:
                    proxy_spec["asvp"] = decision.as_dict()
                if rnd < config.rounds:
                    ups = config.ups
                    subsample = ups is not None and not ups.is_full(rnd) and len(previous) > 0
                    selection = proxy.select(
                        data.pool,
                        version,
                        training,
                        strategy,
                        config.batch_size,
                        seed=round_seed,
                        candidate_ids=data.train_ids,
                        classifier=spec,
                        subsampling=previous.subsampling(ups) if subsample and ups else None,
                        return_scores=ups is not None,
                    )
                    selected = selection.ids.tolist()
                    previous.update(selection.scored_ids, selection.scored_scores)
                    previous.drop(selected)
                    timings = selection.timings
                    if ups is not None:
                        proxy_spec["ups"] = {
                            **asdict(ups),
                            "subsampled": subsample,
                            "scored": selection.candidates,
                        }
                    store.append_labels(
                        session,
                        data.pool,
                        selected,
                        [data.classes[gold_of[i]] for i in selected],
                        source="oracle",
                    )
                elapsed = time.perf_counter() - t0
                if decision is not None:
                    timings = {
                        **timings,
                        "asvp_finetune_s": decision.finetune_s,
                        "asvp_logme_s": decision.logme_s,
                        "asvp_refresh_s": decision.refresh_s,
                    }
                store.record_round(
                    RoundRecord(
                        session=session,
                        round=rnd,
                        strategy=strategy,
                        embedding_version=version,
                        selected_ids=selected,
                        labels_total=len(labeled),
                        proxy_spec=proxy_spec,
                        timings={**timings, "round_s": elapsed},
                        metrics=metrics,
                    )
                )
                point = RoundRow(
                    strategy,
                    seed,
                    rnd,
                    len(labeled),
                    metrics["accuracy"],
                    metrics["macro_f1"],
                    selected_ids=tuple(selected),
                    embed_s=decision.refresh_s if decision is not None else 0.0,
                    load_s=timings.get("load_s", 0.0),
                    fit_s=timings.get("fit_s", 0.0),
                    score_s=timings.get("score_s", 0.0) + timings.get("select_s", 0.0),
                    finetune_s=(
                        decision.finetune_s + decision.logme_s if decision is not None else 0.0
                    ),
                    round_s=elapsed,
                )
                result.points.append(point)
                if on_round is not None:
                    on_round(point)
                labeled.extend(selected)
            result.final_labels[(strategy, seed)] = (
                np.array(labeled, dtype=np.int64),
                [data.classes[gold_of[i]] for i in labeled],
            )
            if aligner is not None:
                result.alignment[(strategy, seed)] = aligner.decisions
    result.wall_s = time.perf_counter() - start
    return result


def _aligner(
    store: Store,
    proxy: ProxyClient,
    data: PoolData,
    config: AsvpConfig,
    runtime: AsvpRuntime,
    session: str,
    spec: proxy_pb2.ClassifierSpec,
    seed: int,
    initial_labels: int,
) -> FeatureAligner:
    """A FeatureAligner for one session, wired to the store, the proxy and the encoder."""
    from orchestrator.asvp import FeatureAligner

    num_classes = len(data.classes)
    max_length = store.get_version(data.pool, data.version).max_length

    def lookup(version: str, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return store.lookup(data.pool, version, ids)

    def proxy_predict(
        version: str,
        train_ids: npt.NDArray[np.int64],
        train_labels: npt.NDArray[np.int32],
        ids: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int64]:
        training = TrainingSet(ids=train_ids, labels=train_labels, num_classes=num_classes)
        predicted = proxy.predict(data.pool, version, training, ids, seed=seed, classifier=spec)
        return np.asarray(predicted, dtype=np.int64)

    def refresh(checkpoint: str, label_count: int, label_hash: str) -> str:
        version = runtime.encoder.refresh(
            data.pool, checkpoint, label_count, label_hash, max_length=max_length
        )
        return version.version

    return FeatureAligner(
        config,
        runtime.texts_of,
        num_classes,
        runtime.checkpoint_root,
        lookup,
        proxy_predict,
        refresh,
        name=session,
        initial_labels=initial_labels,
    )
