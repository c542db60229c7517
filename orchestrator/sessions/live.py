"""Labeling sessions: the domain code behind OrchestratorService.

A session names a pool, its current embedding version (and lineage), a strategy, a
classifier spec, the classes and optional UPS and ASVP schedules. It runs on the one engine
(`engine.loop`): this layer checks requests (names, request ids, ids, classes,
leases) and the engine selects, records rounds, writes labels and runs ASVP checks. All of a
session's state lives in the store: the session row, its label log (`proxal.store.labels`),
its leases and its rounds. A restarted orchestrator replays them and carries on where it was.

Guarantees (docs/sessions.md):
- a write (labels, skip, undo, import) is acknowledged only after its one commit;
- a write carries a request id, and a retry of a committed request is answered from the
  log without writing again; an id reused for a different request is refused;
- NextBatch leases items to one annotator; nobody else gets or may label them until the
  lease ends (its items decided, released, or expired).

Each request that reads and then writes a session runs in one store transaction holding
the session's lock (`Store.session_transaction`), so several orchestrator processes may
serve one database: their writes to a session are serialised, never interleaved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.engine.feature_checks import AsvpRuntime, CheckStatus
from proxal.orchestrator_service.engine.loop import (
    DEFAULT_LEASE_SECONDS,
    MAX_LEASE_SECONDS,
    Engine,
    SessionConfig,
    classifier_of,
    lease_seconds,
    record_config,
)
from proxal.orchestrator_service.engine.selectors import (
    ClassifierSpec,
    Selection,
    Selector,
    TrainingSet,
)
from proxal.orchestrator_service.engine.stopping import StoppingSignal
from proxal.orchestrator_service.engine.ups import UpsSchedule
from proxal.orchestrator_service.sessions.label_files import HF, PARQUET, format_labels
from proxal.orchestrator_service.sessions.stopping import LiveStopping
from proxal.orchestrator_service.sessions.suggest import (
    ItemPredictions,
    Suggestion,
    predict_items,
)
from proxal.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from proxal.runtime.names import check_annotator, check_name, check_request_id
from proxal.runtime.strategies import (
    CLASSIFIERS,
    DEFAULT_CLASSIFIER,
    DEFAULT_STRATEGY,
    STRATEGIES,
    check_initial_batch,
    check_strategy,
)
from proxal.store import SessionRecord, Store
from proxal.store.labels import (
    GRANT,
    IMPORT,
    LABEL,
    RELEASE,
    REMOVE,
    SKIP,
    UNDO,
    LabelEvent,
    LabelLog,
    Lease,
    LeaseEvent,
    Request,
    active_leases,
)
from sklearn.model_selection import StratifiedKFold

if TYPE_CHECKING:
    from proxal.orchestrator_service.engine.asvp import AsvpConfig

MAX_BATCH = 1000  # items per NextBatch, labels per SubmitLabels, ids per Skip
MAX_IMPORT = 100_000  # labels per ImportLabels request
MAX_CLASSES = 10_000
MAX_CLASS_CHARS = 256
DEFAULT_ANNOTATOR = "default"
CV_FOLDS = 5


@dataclass(frozen=True)
class SessionStatus:
    """A session and its counts; the accuracy fields are filled by `Sessions.status`.

    `problem` (from `Sessions.list` only) says why the service cannot serve the session;
    `classes` is then empty."""

    record: SessionRecord
    classes: list[str]
    labels: int
    rounds: int
    skipped: int = 0
    leased: int = 0
    remaining: int = 0
    latest_version: str = ""
    estimated_accuracy: float = float("nan")
    accuracy_note: str = ""
    class_counts: tuple[tuple[str, int], ...] = ()
    annotators: int = 0
    labeled_classes: int = 0
    accuracy_classes: int = 0
    problem: str = ""
    asvp: CheckStatus | None = None  # Status only
    stopping: tuple[StoppingSignal, ...] = ()  # Status only: the three stopping signals

    @property
    def lease_seconds(self) -> float:
        return lease_seconds(self.record)

    @property
    def classifier(self) -> str:
        return str(_config(self.record).get("classifier") or DEFAULT_CLASSIFIER)

    @property
    def classifier_spec(self) -> ClassifierSpec:
        return classifier_of(self.record)


@dataclass(frozen=True)
class Deleted:
    """What `Sessions.delete` removed with a session."""

    session: str
    labels: int
    skipped: int
    label_events: int
    lease_events: int
    rounds: int


@dataclass(frozen=True)
class Batch:
    """Items (id, text) to label; `suggestions` by id, for the items the proxy predicted
    (none on a cold start or for a resumed lease)."""

    items: list[tuple[int, str]]  # (id, text)
    strategy: str
    fallback_reason: str
    round: int
    lease_id: str = ""
    lease_expires_at: float = 0.0
    resumed: bool = False
    suggestions: dict[int, Suggestion] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteResult:
    """The outcome of a labels, skip or import request; an import that left items as they
    were counts them in `already_labeled` and says why in `note`."""

    accepted: int
    total_labels: int
    replayed: bool = False
    already_labeled: int = 0
    note: str = ""


@dataclass(frozen=True)
class UndoResult:
    undone_request_id: str
    items: list[tuple[int, str, str]]  # (id, text, label undone; "" for a skip)
    lease_id: str
    lease_expires_at: float
    total_labels: int
    replayed: bool = False


def request_digest(kind: str, annotator: str, payload: object) -> str:
    """A digest of what a request asks for, to tell a retry from a reused request id."""
    text = json.dumps([kind, annotator, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class Sessions:
    """Create sessions, lease batches chosen by the proxy, take labels, skips and undos."""

    def __init__(
        self,
        store: Store,
        proxy: Selector,
        clock: Callable[[], float] = time.time,
        asvp: AsvpRuntime | None = None,
    ):
        """`proxy` is any selector (one proxy, or a sharded fan-out); `asvp` (the encoder
        and its checkpoint root) lets sessions run ASVP checks."""
        self.store = store
        self.proxy = proxy
        self.clock = clock
        self.engine = Engine(store, proxy, asvp, background=True, clock=clock)
        self._accuracy: dict[tuple[str, int], tuple[float, str, int]] = {}
        self.stopping = LiveStopping(self.engine, proxy)
        self._text_ids: dict[tuple[str, str], dict[str, int]] = {}  # splits never change

    def close(self) -> None:
        """Stop the background checks (a running one is abandoned)."""
        self.engine.close()

    # ------------------------------------------------------------ sessions
    def create(
        self,
        session: str,
        pool: str,
        embedding_version: str = "",
        strategy: str = DEFAULT_STRATEGY,
        batch_size: int = 10,
        seed: int = 0,
        split: str = "train",
        classes: Sequence[str] = (),
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        classifier: str | ClassifierSpec = DEFAULT_CLASSIFIER,
        ups: UpsSchedule | None = None,
        asvp: AsvpConfig | None = None,
        initial_batch: str = "",
        class_balanced: bool = False,
    ) -> SessionStatus:
        """A new session; its classes are `classes`, else the gold labels of `split`.

        `ups` and `asvp` turn on pool subsampling and ASVP feature checks (validated;
        ASVP needs a fine-tunable encoder version and an orchestrator with an encoder).
        `initial_batch` ("random" or "" | "kmeans") picks the batches while no proxy can be
        fitted; `class_balanced` spreads each batch over the predicted classes."""
        check_name("session", session)
        check_name("split", split)
        strategy = check_strategy(strategy)
        initial_batch = check_initial_batch(initial_batch)
        spec = (
            ClassifierSpec(kind=classifier) if isinstance(classifier, str) else classifier
        ).validate()
        if not 1 <= batch_size <= MAX_BATCH:
            raise InvalidArgumentError(f"batch_size must be in 1..{MAX_BATCH}, got {batch_size}")
        if not 0 <= seed < 2**63:
            raise InvalidArgumentError(f"seed must be in 0..2^63-1, got {seed}")
        if not 1.0 <= lease_seconds <= MAX_LEASE_SECONDS:  # also refuses NaN
            raise InvalidArgumentError(
                f"lease_seconds must be in 1..{MAX_LEASE_SECONDS:.0f}, got {lease_seconds}"
            )
        info = self.store.pool_info(pool)
        if split not in info.splits:
            raise NotFoundError(
                f"pool {pool!r} has no split {split!r}; splits: {list(info.splits)}"
            )
        version = (
            self.store.get_version(pool, embedding_version).version
            if embedding_version
            else self.store.latest_version(pool).version
        )
        class_list = _check_classes(list(classes)) if classes else self._split_classes(pool, split)
        config = SessionConfig(
            session,
            pool,
            tuple(class_list),
            strategy,
            batch_size,
            seed,
            split,
            spec,
            lease_seconds,
            ups,
            asvp,
            initial_batch=initial_batch,
            class_balanced=class_balanced,
        )
        record = self.engine.create(config, version)
        return SessionStatus(record, class_list, labels=0, rounds=0)

    def get(self, session: str) -> SessionStatus:
        """The session with its label and round counts (cheap: no accuracy estimate)."""
        record = self.store.get_session(session)
        return SessionStatus(
            record,
            session_classes(record),
            labels=len(self.store.read_label_log(session).labels),
            rounds=self.store.count_rounds(session),
        )

    def list_sessions(self, pool: str = "") -> list[SessionStatus]:
        """Every session (of `pool` if given) by creation time, with its label and round
        counts; a session the service cannot serve is listed with its `problem`."""
        if pool:
            check_name("pool", pool)
        out = []
        for record in self.store.list_sessions():
            if pool and record.pool != pool:
                continue
            try:
                classes, problem = session_classes(record), ""
            except FailedPreconditionError as exc:
                classes, problem = [], str(exc)
            out.append(
                SessionStatus(
                    record,
                    classes,
                    labels=len(self.store.read_label_log(record.session).labels),
                    rounds=self.store.count_rounds(record.session),
                    problem=problem,
                )
            )
        return out

    def delete(self, session: str, force: bool = False) -> Deleted:
        """Delete a session with its label log, leases and rounds. A session with labels
        is refused (FailedPreconditionError) unless `force`."""
        with self.store.session_transaction(session):
            log = self.store.read_label_log(session)
            if log.labels and not force:
                raise FailedPreconditionError(
                    f"session {session!r} has {len(log.labels)} label(s); deleting it deletes "
                    f"them: export them first (proxal labels export {session} -o FILE), then "
                    "delete with force (--force)"
                )
            deleted = Deleted(
                session,
                labels=len(log.labels),
                skipped=len(log.skipped),
                label_events=log.events,
                lease_events=len(self.store.read_lease_events(session)),
                rounds=self.store.count_rounds(session),
            )
            self.engine.delete(session)
            for key in [k for k in self._accuracy if k[0] == session]:
                del self._accuracy[key]
            self.stopping.forget(session)
        return deleted

    def status(self, session: str, stopping: bool = True) -> SessionStatus:
        """Counts, leases, versions, class coverage, the proxy's cross-validated accuracy
        estimate (over the classes it covers only) and, if `stopping`, the stopping
        signals (`stopping_signals`)."""
        record = self.store.get_session(session)
        classes = session_classes(record)
        log = self.store.read_label_log(session)
        leases = active_leases(self.store.read_lease_events(session), log, self.clock())
        leased = sum(len(x.ids) for x in leases)
        split_ids = self._split(record)
        decided = len(log.labels) + len(log.skipped)
        accuracy, note, covered = self._estimated_accuracy(record, log)
        counts = Counter(log.labels.values())
        rounds = self.store.count_rounds(session)
        return SessionStatus(
            record,
            classes,
            labels=len(log.labels),
            rounds=rounds,
            skipped=len(log.skipped),
            leased=leased,
            remaining=max(0, len(split_ids) - decided - leased),
            latest_version=self.store.latest_version(record.pool).version,
            estimated_accuracy=accuracy,
            accuracy_note=note,
            class_counts=tuple(sorted(counts.items(), key=lambda x: (-x[1], x[0]))),
            annotators=len({a for a in log.annotator_of.values() if a}),
            labeled_classes=len(set(counts) & set(classes)),
            accuracy_classes=covered,
            asvp=self.engine.checks.status(record, rounds, len(log.labels)),
            stopping=tuple(self.stopping.signals(record, log)) if stopping else (),
        )

    def stopping_signals(self, session: str) -> list[StoppingSignal]:
        """The session's three stopping signals (`sessions.stopping`); the proxy's errors
        propagate."""
        return self.stopping.signals(
            self.store.get_session(session), self.store.read_label_log(session)
        )

    # ------------------------------------------------------------ batches and leases
    def next_batch(self, session: str, k: int = 0, annotator: str = "") -> Batch:
        """The annotator's open lease if any, else the next k items chosen by the strategy,
        leased to the annotator. Empty when nothing is left to hand out."""
        annotator = check_annotator(annotator or DEFAULT_ANNOTATOR)
        record = self.store.get_session(session)
        _check_servable(record)
        k = k or min(max(record.batch_size, 1), MAX_BATCH)
        if not 1 <= k <= MAX_BATCH:
            raise InvalidArgumentError(f"k must be in 1..{MAX_BATCH}, got {k}")
        chosen = self.engine.next_batch(session, k, annotator)
        lease = chosen.lease
        return Batch(
            self._texts(record, chosen.ids),
            chosen.strategy,
            chosen.fallback_reason,
            chosen.round,
            lease.lease_id if lease else "",
            lease.expires_at if lease else 0.0,
            resumed=chosen.resumed,
            suggestions=suggestions(chosen.selection, session_classes(record)),
        )

    def release(self, session: str, annotator: str = "") -> int:
        """End the annotator's open leases now; returns how many items went back."""
        annotator = check_annotator(annotator or DEFAULT_ANNOTATOR)
        with self.store.session_transaction(session):
            log = self.store.read_label_log(session)
            leases = active_leases(self.store.read_lease_events(session), log, self.clock())
            own = [x for x in leases if x.annotator == annotator]
            self.engine.write_leases(
                session, [LeaseEvent(RELEASE, x.lease_id, annotator) for x in own]
            )
        return sum(len(x.ids) for x in own)

    # ------------------------------------------------------------ writes
    def submit(
        self,
        session: str,
        labels: Sequence[tuple[int, str]],
        request_id: str = "",
        annotator: str = "",
        relabel: bool = False,
    ) -> WriteResult:
        """Commit labels for items of the session's split; idempotent per request id."""
        annotator = check_annotator(annotator or DEFAULT_ANNOTATOR)
        record = self.store.get_session(session)
        ids = self._check_pairs(record, labels, MAX_BATCH)
        digest = request_digest(LABEL, annotator, [sorted(labels), relabel])
        with self._writing(session, request_id, digest) as (log, replay):
            if replay is not None:
                return WriteResult(len(replay.events), len(log.labels), replayed=True)
            if not relabel:
                done = [i for i in ids if i in log.labels]
                if done:
                    raise FailedPreconditionError(
                        f"{len(done)} item(s) already have a label, e.g. {done[0]} is "
                        f"{log.labels[done[0]]!r}; set relabel to change labels"
                    )
            self._check_not_leased_to_others(session, log, ids, annotator)
            self.engine.write_labels(
                session,
                record.pool,
                [
                    LabelEvent(LABEL, i, lab, request_id, digest, annotator)
                    for (_, lab), i in zip(labels, ids, strict=True)
                ],
            )
        total = len(log.labels) + sum(1 for i in ids if i not in log.labels)
        return WriteResult(len(ids), total)

    def skip(
        self, session: str, ids: Sequence[int], request_id: str = "", annotator: str = ""
    ) -> WriteResult:
        """Skip items: they are not handed out again in this session (Undo brings them back)."""
        annotator = check_annotator(annotator or DEFAULT_ANNOTATOR)
        record = self.store.get_session(session)
        items = self._check_items(record, ids, MAX_BATCH, "ids")
        digest = request_digest(SKIP, annotator, sorted(items))
        with self._writing(session, request_id, digest) as (log, replay):
            if replay is not None:
                return WriteResult(len(replay.events), len(log.labels), replayed=True)
            done = [i for i in items if i in log.labels]
            if done:
                raise FailedPreconditionError(
                    f"{len(done)} item(s) already have a label, e.g. {done[0]}; only items "
                    "without a label can be skipped (Undo takes a label back)"
                )
            self._check_not_leased_to_others(session, log, items, annotator)
            self.engine.write_labels(
                session,
                record.pool,
                [LabelEvent(SKIP, i, "", request_id, digest, annotator) for i in items],
            )
        return WriteResult(len(items), len(log.labels))

    def undo(self, session: str, request_id: str = "", annotator: str = "") -> UndoResult:
        """Revert the annotator's latest label or skip request; its items are leased back."""
        annotator = check_annotator(annotator or DEFAULT_ANNOTATOR)
        record = self.store.get_session(session)
        digest = request_digest(UNDO, annotator, [])
        with self._writing(session, request_id, digest) as (log, replay):
            if replay is not None:
                target = log.requests[replay.events[0].undoes]
            else:
                found = log.last_undoable(annotator)
                if found is None:
                    raise FailedPreconditionError(
                        f"annotator {annotator!r} has nothing to undo in session {session!r}"
                    )
                target = found
                self.engine.write_labels(
                    session,
                    record.pool,
                    [
                        LabelEvent(
                            UNDO, e.id, e.label, request_id, digest, annotator, target.request_id
                        )
                        for e in target.events
                    ],
                )
                log = self.store.read_label_log(session)
            lease = self._lease_back(session, record, log, annotator, target.ids)
        return UndoResult(
            target.request_id,
            [
                (e.id, text, e.label)
                for e, (_, text) in zip(target.events, self._texts(record, target.ids), strict=True)
            ],
            lease.lease_id if lease else "",
            lease.expires_at if lease else 0.0,
            len(log.labels),
            replayed=replay is not None,
        )

    def import_labels(
        self,
        session: str,
        labels: Sequence[tuple[int, str]],
        request_id: str = "",
        overwrite: bool = False,
        annotator: str = "",
        annotators: Sequence[str] = (),
    ) -> WriteResult:
        """Labels made elsewhere; items that have a label keep it unless `overwrite`.

        `annotators[i]` (optional, "" for none) is who made `labels[i]`, as recorded in the
        file; labels without one are recorded as `annotator`'s."""
        annotator = check_annotator(annotator or "import")
        if annotators and len(annotators) != len(labels):
            raise InvalidArgumentError("give one annotator per label, or none")
        who = [check_annotator(a) if a else annotator for a in annotators or [""] * len(labels)]
        record = self.store.get_session(session)
        ids = self._check_pairs(record, labels, MAX_IMPORT)
        items = sorted(zip(ids, (lab for _, lab in labels), who, strict=True))
        digest = request_digest(IMPORT, annotator, [items, overwrite])
        with self._writing(session, request_id, digest) as (log, replay):
            if replay is not None:
                return _imported(len(replay.events), len(ids), len(log.labels), replayed=True)
            events = [
                LabelEvent(IMPORT, i, lab, request_id, digest, by, source="import")
                for (_, lab), i, by in zip(labels, ids, who, strict=True)
                if overwrite or i not in log.labels
            ]
            self.engine.write_labels(session, record.pool, events)
        total = len(log.labels) + sum(1 for e in events if e.id not in log.labels)
        return _imported(len(events), len(ids), total)

    def export_labels(self, session: str, fmt: str) -> bytes:
        """The current labels as a file in `fmt` (`label_files.EXPORT_FORMATS`)."""
        needs = fmt in (PARQUET, HF)  # their files name the classes
        classes = session_classes(self.store.get_session(session)) if needs else []
        return format_labels(self.export_rows(session), fmt, classes)

    def remove(
        self, session: str, ids: Sequence[int], request_id: str = "", annotator: str = ""
    ) -> WriteResult:
        """Take the items' labels or skips away, whoever gave them (they go back to the
        pool); idempotent per request id. Items without either are left as they are."""
        annotator = check_annotator(annotator or DEFAULT_ANNOTATOR)
        record = self.store.get_session(session)
        items = self._check_items(record, ids, MAX_BATCH, "ids")
        digest = request_digest(REMOVE, annotator, sorted(items))
        with self._writing(session, request_id, digest) as (log, replay):
            if replay is not None:
                return WriteResult(len(replay.events), len(log.labels), replayed=True)
            events = [
                LabelEvent(REMOVE, i, log.labels.get(i, ""), request_id, digest, annotator)
                for i in items
                if log.decided(i)
            ]
            if events:
                self.engine.write_labels(session, record.pool, events)
        total = len(log.labels) - sum(1 for e in events if e.id in log.labels)
        left = len(items) - len(events)
        note = f"{left} item(s) had no label or skip to remove" if left else ""
        return WriteResult(len(events), total, note=note)

    def predict(self, session: str, ids: Sequence[int]) -> ItemPredictions:
        """The session's current proxy on `ids` of its split (writes nothing)."""
        record = self.store.get_session(session)
        _check_servable(record)
        items = self._check_items(record, ids, MAX_BATCH, "ids")
        log = self.store.read_label_log(session)
        training = self._training(record, log.labels)
        rounds = self.store.count_rounds(session)
        return predict_items(self.proxy, record, session_classes(record), training, items, rounds)

    def lookup(self, session: str, texts: Sequence[str]) -> list[int]:
        """The id of each text in the session's split (the smallest id when a text occurs
        more than once), -1 where none has that text exactly."""
        if len(texts) > MAX_BATCH:
            raise InvalidArgumentError(
                f"{len(texts)} texts in one request; send at most {MAX_BATCH} per request"
            )
        record = self.store.get_session(session)
        key = (record.pool, record.split)
        if key not in self._text_ids:
            rows = self.store.pool_rows(record.pool, split=record.split, columns=["id", "text"])
            pairs = zip(rows.column("id").to_pylist(), rows.column("text").to_pylist(), strict=True)
            index: dict[str, int] = {}
            for i, text in sorted(pairs):
                index.setdefault(text, int(i))
            self._text_ids[key] = index
        index = self._text_ids[key]
        return [index.get(t, -1) for t in texts]

    def export_rows(self, session: str) -> list[dict[str, object]]:
        """The current labels as rows: id, text, label, annotator (in the order given)."""
        record = self.store.get_session(session)
        log = self.store.read_label_log(session)
        ids = list(log.labels)
        return [
            {"id": i, "text": text, "label": log.labels[i], "annotator": log.annotator_of[i]}
            for i, text in self._texts(record, ids)
        ]

    # ------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _writing(
        self, session: str, request_id: str, digest: str
    ) -> Iterator[tuple[LabelLog, Request | None]]:
        """A transaction holding the session's lock, with its log, and the committed request
        with this id if this is a retry (then the caller answers from it and writes
        nothing). The block's writes commit when it ends."""
        check_request_id(request_id)
        with self.store.session_transaction(session):
            log = self.store.read_label_log(session)
            yield log, _replayed(log, request_id, digest)

    def _split_classes(self, pool: str, split: str) -> list[str]:
        """The gold classes of one split (never another split's): a new session's classes
        when none are given; InvalidArgumentError when the split has fewer than two."""
        rows = self.store.pool_rows(pool, split=split, columns=["label"])
        found = sorted({x for x in rows.column("label").to_pylist() if x is not None})
        if len(found) < 2:
            has = "no gold labels" if not found else f"gold labels of one class ({found[0]!r})"
            raise InvalidArgumentError(
                f"split {split!r} of pool {pool!r} has {has} to take the session's classes "
                "from: pass the classes (--classes a,b,c on the CLI)"
            )
        return _check_classes(found)

    def _split(self, record: SessionRecord) -> npt.NDArray[np.int64]:
        """The ids of the session's split."""
        return self.engine.split_ids(record.pool, record.split)

    def _texts(self, record: SessionRecord, ids: Sequence[int]) -> list[tuple[int, str]]:
        text_of = self.store.pool_texts(record.pool, ids)
        return [(i, text_of[i]) for i in ids]

    def _check_items(
        self, record: SessionRecord, ids: Sequence[int], limit: int, what: str
    ) -> list[int]:
        if not ids:
            raise InvalidArgumentError(f"no {what} in the request")
        if len(ids) > limit:
            raise InvalidArgumentError(
                f"{len(ids)} {what} in one request; send at most {limit} per request"
            )
        items = [int(i) for i in ids]
        if len(set(items)) != len(items):
            dup = next(i for i, n in Counter(items).items() if n > 1)
            raise InvalidArgumentError(f"id {dup} appears more than once in the request")
        known = self._split(record)
        missing = np.setdiff1d(np.asarray(items, dtype=np.int64), known)
        if missing.size:
            raise NotFoundError(
                f"{missing.size} id(s) are not in split {record.split!r} of pool "
                f"{record.pool!r}: {missing[:5].tolist()}"
            )
        return items

    def _check_pairs(
        self, record: SessionRecord, labels: Sequence[tuple[int, str]], limit: int
    ) -> list[int]:
        """The ids of (id, label) pairs, checked against the split and the classes."""
        ids = self._check_items(record, [i for i, _ in labels], limit, "labels")
        _check_labels(record, [lab for _, lab in labels])
        return ids

    def _check_not_leased_to_others(
        self, session: str, log: LabelLog, ids: Sequence[int], annotator: str
    ) -> None:
        leases = active_leases(self.store.read_lease_events(session), log, self.clock())
        holder = {i: x for x in leases if x.annotator != annotator for i in x.ids}
        taken = [i for i in ids if i in holder]
        if taken:
            lease = holder[taken[0]]
            raise FailedPreconditionError(
                f"{len(taken)} item(s) are leased to annotator {lease.annotator!r}, e.g. "
                f"{taken[0]} until {time.strftime('%H:%M:%S', time.gmtime(lease.expires_at))} "
                "UTC; label items from your own NextBatch"
            )

    def _lease_back(
        self,
        session: str,
        record: SessionRecord,
        log: LabelLog,
        annotator: str,
        ids: Sequence[int],
    ) -> Lease | None:
        """Lease the undecided `ids` that nobody else holds to `annotator` (after an undo)."""
        leases = active_leases(self.store.read_lease_events(session), log, self.clock())
        held = {i: x for x in leases for i in x.ids}
        mine = [x for x in leases if x.annotator == annotator and set(ids) <= set(x.ids)]
        if mine:
            return mine[0]
        free = tuple(i for i in ids if not log.decided(i) and i not in held)
        if not free:
            return None
        expires = self.clock() + lease_seconds(record)
        lease = Lease(uuid.uuid4().hex, annotator, free, expires)
        self.engine.write_leases(
            session, [LeaseEvent(GRANT, lease.lease_id, annotator, free, expires)]
        )
        return lease

    def _training(self, record: SessionRecord, labels: dict[int, str]) -> TrainingSet:
        return self.engine.training(record, labels)

    def _estimated_accuracy(self, record: SessionRecord, log: LabelLog) -> tuple[float, str, int]:
        """Stratified k-fold accuracy of the proxy on the labels, cached per log length
        -> (accuracy, note, how many classes it covers)."""
        key = (record.session, log.events)
        if key not in self._accuracy:
            self._accuracy[key] = self._cross_validate(record, log.labels)
        return self._accuracy[key]

    def _cross_validate(
        self, record: SessionRecord, labels: dict[int, str]
    ) -> tuple[float, str, int]:
        counts = Counter(labels.values())
        kept = {i: lab for i, lab in labels.items() if counts[lab] >= 2}
        covered = len({*kept.values()})
        if covered < 2:
            return float("nan"), "needs two classes with at least two labels each", 0
        folds = min(CV_FOLDS, min(counts[lab] for lab in kept.values()))
        training = self._training(record, kept)
        correct = 0
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=record.seed % 2**32)
        for train, test in splitter.split(training.ids, training.labels):
            fold = TrainingSet(training.ids[train], training.labels[train], training.num_classes)
            predicted = self.proxy.predict(
                record.pool,
                record.embedding_version,
                fold,
                training.ids[test],
                record.seed,
                classifier=classifier_of(record),
            )
            correct += int((predicted == training.labels[test]).sum())
        dropped = len(labels) - len(kept)
        note = f"{folds}-fold cross-validation of the proxy on {len(kept)} labels"
        if dropped:
            note += f" ({dropped} in classes with a single label left out)"
        total = len(session_classes(record))
        note += (
            f"; it covers only these {covered} of the session's {total} classes"
            if covered < total
            else f"; it covers all {total} of the session's classes"
        )
        return correct / len(kept), note, covered


def _check_classes(classes: list[str]) -> list[str]:
    """The classes passed to CreateSession; InvalidArgumentError saying what is wrong."""
    problem = _classes_problem(classes)
    if problem:
        raise InvalidArgumentError(f"{problem}: pass `classes` (--classes a,b,c on the CLI)")
    return classes


def _classes_problem(classes: object) -> str:
    """Why `classes` cannot be a session's classes; "" when they can."""
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return "a session needs a list of class names"
    if len(classes) < 2 or len(set(classes)) != len(classes):
        return "a session needs at least two distinct classes"
    if len(classes) > MAX_CLASSES:
        return f"{len(classes)} classes; at most {MAX_CLASSES} are allowed"
    bad = [c for c in classes if not c.strip() or len(c) > MAX_CLASS_CHARS]
    if bad:
        return (
            f"class names must be 1..{MAX_CLASS_CHARS} characters and not blank, got "
            f"{bad[0][:80]!r} ({len(bad[0])} characters)"
        )
    return ""


def suggestions(selection: Selection | None, classes: Sequence[str]) -> dict[int, Suggestion]:
    """The selection's predictions by picked id, as class names of `classes`; {} when it
    has none (no selection, or no proxy fitted)."""
    if selection is None or len(selection.predicted_labels) != len(selection.ids):
        return {}
    return {
        int(i): Suggestion(classes[int(c)], float(p), float(s))
        for i, c, p, s in zip(
            selection.ids,
            selection.predicted_labels,
            selection.predicted_probabilities,
            selection.scores,
            strict=True,
        )
    }


def _config(record: SessionRecord) -> dict[str, object]:
    return record_config(record)


def session_classes(record: SessionRecord) -> list[str]:
    """The session's classes; FailedPreconditionError when its record has none the service
    can use (e.g. a session a simulation wrote before classes were recorded)."""
    config = _config(record)
    if "classes" not in config:
        kind = "a simulation" if config.get("simulated") else "an older proxal"
        raise FailedPreconditionError(
            f"session {record.session!r} has no classes in its record (written by {kind}), so "
            "it cannot be served; create a new session (proxal session create ... --classes)"
        )
    classes = config["classes"]
    problem = _classes_problem(classes)
    if problem:
        raise FailedPreconditionError(
            f"session {record.session!r} cannot be served: its record's classes are "
            f"unusable ({problem}); create a new session"
        )
    assert isinstance(classes, list)  # checked by _classes_problem
    return list(classes)


def _check_servable(record: SessionRecord) -> None:
    """FailedPreconditionError when NextBatch cannot run on this record."""
    session_classes(record)
    if record.strategy not in STRATEGIES:
        raise FailedPreconditionError(
            f"session {record.session!r} was created with the unknown strategy "
            f"{record.strategy[:80]!r}; create a new session with one of: {', '.join(STRATEGIES)}"
        )
    classifier = _config(record).get("classifier") or DEFAULT_CLASSIFIER
    if classifier not in CLASSIFIERS:
        raise FailedPreconditionError(
            f"session {record.session!r} has the unknown classifier {str(classifier)[:80]!r}; "
            f"create a new session with one of: {', '.join(CLASSIFIERS)}"
        )


def _check_labels(record: SessionRecord, labels: Sequence[str]) -> None:
    classes = set(session_classes(record))
    bad = sorted({lab for lab in labels if lab not in classes})
    if bad:
        raise InvalidArgumentError(
            f"unknown label(s) {[b[:80] for b in bad[:5]]}; the session's classes are "
            f"{sorted(classes)[:20]}"
        )


def _imported(accepted: int, asked: int, total: int, replayed: bool = False) -> WriteResult:
    """An import's outcome; the items not written already had a label (no overwrite)."""
    left = asked - accepted
    note = f"{left} already labelled; pass --overwrite to replace their labels" if left else ""
    return WriteResult(accepted, total, replayed, already_labeled=left, note=note)


def _replayed(log: LabelLog, request_id: str, digest: str) -> Request | None:
    """The committed request with this id (a retry), or None for a new request."""
    request = log.requests.get(request_id)
    if request is None:
        return None
    if request.request_hash != digest:
        raise InvalidArgumentError(
            f"request_id {request_id!r} was already used for a different request; use a new "
            "request id for each new request, and the same one only to retry"
        )
    return request
