"""The one active-learning engine: live labelling sessions and simulations run on it.

A session (`SessionConfig`) is a pool split, its classes, a classifier spec and strategy, a
batch size and seed, optional UPS and ASVP schedules, and its embedding-version lineage
(the versions it selected on, oldest first; the last is the current one). The engine has
two operations:

- *next batch* (`Engine.next_batch`): select on the session's current version over the
  items nobody labelled, skipped or holds, honour the UPS schedule, lease the picks to the
  annotator (none for an oracle), and record the round (version, spec, picks, UPS
  decision, ASVP check, timings);
- *accept labels* (`Engine.write_labels`, `Engine.oracle_labels`): from a person (through
  `sessions.live.Sessions`, which checks requests, ids and leases) or from an
  oracle that reads gold labels (`proxal.orchestrator_service.engine.simulation`).

It is the one writer of session records, rounds and labels. A round runs in one store
transaction holding the session's lock (`Store.session_transaction`: its row FOR UPDATE on
PostgreSQL, the writer lock on SQLite), so any number of orchestrators on one database
hand out every item to one annotator at most. ASVP checks (`engine.feature_checks`) run in
a background thread pool for live sessions and switch the session to a refreshed version
at the next round boundary; a simulation runs them inline, so its results stay
deterministic. No gRPC and no protos in here: the selector
(`proxal.orchestrator_service.engine.selectors.Selector`) and the encoder are passed in.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.engine.feature_checks import (
    AsvpRuntime,
    CheckStatus,
    FeatureChecks,
)
from proxal.orchestrator_service.engine.selectors import (
    ClassifierSpec,
    Selection,
    Selector,
    TrainingSet,
)
from proxal.orchestrator_service.engine.ups import ScoreTable, UpsSchedule
from proxal.runtime.errors import FailedPreconditionError
from proxal.runtime.strategies import DEFAULT_CLASSIFIER, DEFAULT_INITIAL_BATCH
from proxal.store import RoundRecord, SessionRecord, Store
from proxal.store.labels import GRANT, LabelEvent, LabelLog, Lease, LeaseEvent, active_leases

if TYPE_CHECKING:
    from proxal.orchestrator_service.engine.asvp import AlignmentDecision, AsvpConfig

DEFAULT_LEASE_SECONDS = 600.0
MAX_LEASE_SECONDS = 7 * 24 * 3600.0
# Test-split metrics of a round's proxy: (version, training set, round seed) -> metrics.
Evaluate = Callable[[str, TrainingSet, int], dict[str, float]]


def round_seed(seed: int, rnd: int) -> int:
    """The seed of round `rnd` of a session seeded `seed` (the same for Predict and Select,
    so both see one fit)."""
    return (seed * 1000 + rnd) % 2**64


@dataclass(frozen=True)
class SessionConfig:
    """What a session runs; stored in its record's config (`to_record`)."""

    session: str
    pool: str
    classes: tuple[str, ...]
    strategy: str
    batch_size: int
    seed: int
    split: str = "train"
    classifier: ClassifierSpec = field(default_factory=ClassifierSpec)
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    ups: UpsSchedule | None = None
    asvp: AsvpConfig | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. a simulation's loop config
    initial_batch: str = DEFAULT_INITIAL_BATCH  # "random" | "kmeans" while no proxy fits
    class_balanced: bool = False  # spread each batch over the predicted classes

    def to_record(self, version: str) -> SessionRecord:
        """The session's record, starting on `version` (its lineage's first entry)."""
        config = {
            **self.extra,
            "classes": list(self.classes),
            "lease_seconds": self.lease_seconds,
            "classifier": self.classifier.kind,
            "classifier_spec": asdict(self.classifier),
            "ups": None if self.ups is None else asdict(self.ups),
            "asvp": None if self.asvp is None else asvp_dict(self.asvp),
            "lineage": [version],
            "initial_batch": self.initial_batch,
            "class_balanced": self.class_balanced,
        }
        return SessionRecord(
            session=self.session,
            pool=self.pool,
            embedding_version=version,
            strategy=self.strategy,
            batch_size=self.batch_size,
            seed=self.seed,
            split=self.split,
            config=config,
        )


def asvp_dict(config: AsvpConfig) -> dict[str, Any]:
    """An AsvpConfig as JSON-ready data (`asvp_from_dict` reads it back)."""
    data = asdict(config)
    data["finetune"]["lora_target_modules"] = list(config.finetune.lora_target_modules)
    return data


def asvp_from_dict(data: dict[str, Any]) -> AsvpConfig:
    from proxal.orchestrator_service.engine.asvp import AsvpConfig
    from proxal.orchestrator_service.successor.config import SuccessorConfig

    finetune = dict(data.get("finetune") or {})
    if "lora_target_modules" in finetune:
        finetune["lora_target_modules"] = tuple(finetune["lora_target_modules"])
    return AsvpConfig(**{**data, "finetune": SuccessorConfig(**finetune)})


def record_config(record: SessionRecord) -> dict[str, Any]:
    return record.config if isinstance(record.config, dict) else {}


def classifier_of(record: SessionRecord) -> ClassifierSpec:
    """The record's classifier spec (older records name only the kind)."""
    config = record_config(record)
    spec = config.get("classifier_spec")
    if isinstance(spec, dict):
        return ClassifierSpec(**spec)
    return ClassifierSpec(kind=str(config.get("classifier") or DEFAULT_CLASSIFIER))


def ups_of(record: SessionRecord) -> UpsSchedule | None:
    data = record_config(record).get("ups")
    return UpsSchedule(**data) if isinstance(data, dict) else None


def asvp_of(record: SessionRecord) -> AsvpConfig | None:
    data = record_config(record).get("asvp")
    return asvp_from_dict(data) if isinstance(data, dict) else None


def initial_batch_of(record: SessionRecord) -> str:
    """How the session picks while no proxy can be fitted (older records: "random")."""
    return str(record_config(record).get("initial_batch") or DEFAULT_INITIAL_BATCH)


def class_balanced_of(record: SessionRecord) -> bool:
    """Whether the session spreads each batch over the predicted classes."""
    return bool(record_config(record).get("class_balanced", False))


def lineage_of(record: SessionRecord) -> list[str]:
    """The versions the session selected on, oldest first; the last is the current one."""
    lineage = record_config(record).get("lineage")
    if isinstance(lineage, list) and lineage and lineage[-1] == record.embedding_version:
        return [str(v) for v in lineage]
    return [record.embedding_version]


@dataclass(frozen=True)
class Round:
    """What one next batch did: the round, the version it selected on, the picks (empty for
    an evaluation-only round or nothing left), a resumed or new lease, and its timings."""

    round: int
    version: str
    ids: tuple[int, ...]
    strategy: str
    fallback_reason: str = ""
    lease: Lease | None = None
    resumed: bool = False
    selection: Selection | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    decision: AlignmentDecision | None = None
    round_s: float = 0.0


@dataclass
class _Runtime:
    """A session's in-memory state: UPS scores of the version they were computed on."""

    scores: ScoreTable = field(default_factory=ScoreTable)
    scores_version: str = ""


class Engine:
    """Next batch and accept labels for every session of one store (several processes may
    share the store's database: their writes to a session are serialised by its lock)."""

    def __init__(
        self,
        store: Store,
        selector: Selector,
        asvp: AsvpRuntime | None = None,
        background: bool = True,
        clock: Callable[[], float] = time.time,
        check_workers: int = 2,
    ) -> None:
        self.store = store
        self.selector = selector
        self.clock = clock
        self._split_ids: dict[tuple[str, str], npt.NDArray[np.int64]] = {}
        self._runtime: dict[str, _Runtime] = {}
        self.checks = FeatureChecks(store, selector, asvp, self._switch, background, check_workers)

    # ------------------------------------------------------------ sessions

    def create(self, config: SessionConfig, version: str) -> SessionRecord:
        """Record a new session starting on `version`; FailedPreconditionError for ASVP on a
        version whose encoder cannot be fine-tuned, or without an encoder to refresh it."""
        if config.asvp is not None:
            config.asvp.validate()
            self.checks.check_available(config.pool, version)
        if config.ups is not None:
            config.ups.validate()
        return self.store.create_session(config.to_record(version))

    def delete(self, session: str) -> None:
        self.checks.forget(session)
        self._runtime.pop(session, None)
        self.store.delete_session(session)

    def close(self) -> None:
        self.checks.close()

    def split_ids(self, pool: str, split: str) -> npt.NDArray[np.int64]:
        """The sorted ids of a pool's split (splits never change once ingested)."""
        key = (pool, split)
        if key not in self._split_ids:
            rows = self.store.pool_rows(pool, split=split, columns=["id"])
            self._split_ids[key] = np.sort(rows.column("id").to_numpy())
        return self._split_ids[key]

    def status(self, session: str, rounds: int, labels: int) -> CheckStatus:
        """The session's ASVP state: the last check, whether one runs, when the next is due."""
        return self.checks.status(self.store.get_session(session), rounds, labels)

    # ------------------------------------------------------------ accept labels
    def write_labels(self, session: str, pool: str, events: Sequence[LabelEvent]) -> None:
        """Commit one request's label events (all or none)."""
        self.store.append_label_events(session, pool, events)

    def oracle_labels(
        self, session: str, pool: str, ids: Sequence[int], labels: Sequence[str]
    ) -> None:
        """Labels from an oracle that reads gold labels (a simulation), one commit."""
        self.store.append_labels(session, pool, ids, labels, source="oracle")

    def write_leases(self, session: str, events: Sequence[LeaseEvent]) -> None:
        self.store.append_lease_events(session, events, now=self.clock())

    # ------------------------------------------------------------ next batch
    def next_batch(
        self,
        session: str,
        k: int = 0,
        annotator: str | None = None,
        evaluate: Evaluate | None = None,
        select: bool = True,
    ) -> Round:
        """The annotator's open lease if any, else the next k picks on the current version,
        leased to `annotator` (None: an oracle, no lease), recorded as a round. `evaluate`
        scores the round's proxy (a simulation); `select=False` only evaluates."""
        with self.store.session_transaction(session):
            record = self.store.get_session(session)
            log = self.store.read_label_log(session)
            rounds = self.store.count_rounds(session)
            now = self.clock()
            leases = (
                active_leases(self.store.read_lease_events(session), log, now)
                if annotator is not None
                else []
            )
            own = [x for x in leases if x.annotator == annotator]
            if own:
                lease = own[0]
                return Round(
                    rounds - 1,
                    record.embedding_version,
                    lease.ids,
                    record.strategy,
                    lease=lease,
                    resumed=True,
                )
            return self._round(
                record, log, leases, rounds, k or record.batch_size, annotator, evaluate, select
            )

    def _round(
        self,
        record: SessionRecord,
        log: LabelLog,
        leases: list[Lease],
        rnd: int,
        k: int,
        annotator: str | None,
        evaluate: Evaluate | None,
        select: bool,
    ) -> Round:
        """One round in the session's transaction (see `next_batch`)."""
        t0 = time.perf_counter()
        training = self.training(record, log.labels)
        decision = None
        if select:
            decision = self.checks.at_round(record, rnd, training)
            if decision is not None and decision.version_after != record.embedding_version:
                record = self.store.get_session(record.session)  # switched inline
        version = record.embedding_version
        metrics = evaluate(version, training, round_seed(record.seed, rnd)) if evaluate else {}
        selection = None
        if select:
            taken = [*log.labels, *log.skipped, *(i for x in leases for i in x.ids)]
            split = self.split_ids(record.pool, record.split)
            candidates = split[~np.isin(split, np.asarray(taken, dtype=np.int64))]
            if candidates.size == 0:
                return Round(rnd, version, (), record.strategy, "nothing left to label")
            selection = self._select(record, training, candidates, min(k, candidates.size), rnd)
        ids = () if selection is None else tuple(int(i) for i in selection.ids)
        lease = self._grant(record, annotator, ids) if ids else None
        elapsed = time.perf_counter() - t0
        self._record(record, rnd, training, selection, ids, decision, metrics, annotator, elapsed)
        return Round(
            rnd,
            version,
            ids,
            selection.strategy if selection else record.strategy,
            selection.fallback_reason if selection else "",
            lease,
            selection=selection,
            metrics=metrics,
            decision=decision,
            round_s=elapsed,
        )

    def _select(
        self,
        record: SessionRecord,
        training: TrainingSet,
        candidates: npt.NDArray[np.int64],
        k: int,
        rnd: int,
    ) -> Selection:
        """The selector's picks on the current version, with UPS when the schedule says."""
        ups = ups_of(record)
        state = self._runtime.setdefault(record.session, _Runtime())
        if state.scores_version != record.embedding_version:  # scores of old features: rescore
            state.scores, state.scores_version = ScoreTable(), record.embedding_version
        subsample = ups is not None and not ups.is_full(rnd) and len(state.scores) > 0
        selection = self.selector.select(
            record.pool,
            record.embedding_version,
            training,
            record.strategy,
            k,
            seed=round_seed(record.seed, rnd),
            candidate_ids=candidates,
            classifier=classifier_of(record),
            subsampling=state.scores.subsampling(ups) if subsample and ups else None,
            return_scores=ups is not None,
            initial=initial_batch_of(record),
            class_balanced=class_balanced_of(record),
        )
        if ups is not None:
            state.scores.update(selection.scored_ids, selection.scored_scores)
            state.scores.drop(selection.ids)
            selection = replace(selection, timings={**selection.timings, "ups": subsample})
        return selection

    def _grant(
        self, record: SessionRecord, annotator: str | None, ids: tuple[int, ...]
    ) -> Lease | None:
        if annotator is None:
            return None
        expires = self.clock() + lease_seconds(record)
        lease = Lease(uuid.uuid4().hex, annotator, ids, expires)
        self.write_leases(
            record.session, [LeaseEvent(GRANT, lease.lease_id, annotator, ids, expires)]
        )
        return lease

    def _record(
        self,
        record: SessionRecord,
        rnd: int,
        training: TrainingSet,
        selection: Selection | None,
        ids: tuple[int, ...],
        decision: AlignmentDecision | None,
        metrics: dict[str, float],
        annotator: str | None,
        elapsed: float,
    ) -> None:
        """The round's record: version, spec, UPS decision, ASVP check, picks, timings."""
        spec: dict[str, Any] = {**asdict(classifier_of(record))}
        timings: dict[str, float] = {}
        summary: dict[str, Any] = {}
        if decision is not None:
            spec["asvp"] = decision.as_dict()
            timings.update(
                asvp_finetune_s=decision.finetune_s,
                asvp_logme_s=decision.logme_s,
                asvp_refresh_s=decision.refresh_s,
            )
        if selection is not None:
            timings.update({k: v for k, v in selection.timings.items() if k != "ups"})
            ups = ups_of(record)
            if ups is not None:
                spec["ups"] = {
                    **asdict(ups),
                    "subsampled": bool(selection.timings.get("ups")),
                    "scored": selection.candidates,
                }
            if len(selection.scores):
                summary = {
                    "max": float(selection.scores.max()),
                    "min": float(selection.scores.min()),
                }
        if annotator is not None:
            summary["annotator"] = annotator
        self.store.record_round(
            RoundRecord(
                session=record.session,
                round=rnd,
                strategy=selection.strategy if selection else record.strategy,
                embedding_version=record.embedding_version,
                selected_ids=list(ids),
                labels_total=len(training.ids),
                proxy_spec=spec,
                scores_summary=summary,
                timings={**timings, "round_s": elapsed},
                metrics=metrics,
            )
        )

    def _switch(self, session: str, version: str, check: dict[str, Any]) -> None:
        """Make `version` the session's current one, in a transaction holding its lock
        (joining the round's, inline): persisted, so the switch and the lineage survive a
        restart; the next round selects on it."""
        with self.store.session_transaction(session) as tx:
            record = tx.get_session(session)
            config = dict(record_config(record))
            config["lineage"] = [*lineage_of(record), version]
            config["last_check"] = check
            tx.update_session(session, version, config)

    # ------------------------------------------------------------ helpers
    def training(self, record: SessionRecord, labels: dict[int, str]) -> TrainingSet:
        """The labels as class indices of the session's classes, in the order given."""
        classes = record_config(record).get("classes") or []
        index = {c: i for i, c in enumerate(classes)}
        outside = sorted({lab for lab in labels.values() if lab not in index})
        if outside:
            raise FailedPreconditionError(
                f"session {record.session!r} has labels outside its classes, e.g. "
                f"{outside[0][:80]!r}: its record does not match its label log; create a new "
                "session and import the labels"
            )
        return TrainingSet(
            ids=np.fromiter(labels.keys(), dtype=np.int64, count=len(labels)),
            labels=np.array([index[x] for x in labels.values()], dtype=np.int32),
            num_classes=len(index),
        )


def lease_seconds(record: SessionRecord) -> float:
    """The record's lease length; the default when it has none or an unusable one."""
    value = record_config(record).get("lease_seconds", DEFAULT_LEASE_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DEFAULT_LEASE_SECONDS
    return float(value) if 1.0 <= value <= MAX_LEASE_SECONDS else DEFAULT_LEASE_SECONDS
