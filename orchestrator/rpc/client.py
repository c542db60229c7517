"""The Python client for notebooks and the CLI: `from proxal import Client`.

Typed calls over OrchestratorService (a running `proxal serve`, e.g. from `proxal up`):
create, list and delete sessions, take the next batch, submit, skip and undo labels,
import and export labels, read the status; train successors (`train_successor`,
`watch_job`, `wait`, `list_models`); plus `simulate`, which runs `proxal simulate` in this
process. Calls return frozen dataclasses, never protos, and fail with proxal's error
hierarchy (`proxal.runtime.errors`: InvalidArgumentError, NotFoundError, ...), never
`grpc.RpcError`; `rpc_status` gives such an error's gRPC status name and the server's
message. Writes carry a fresh request id and are retried with it while the orchestrator is
unreachable, so a label is never counted twice (see orchestrator/rpc/session_client.py).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.rpc.session_client import Imported, SessionClient
from proxal.orchestrator_service.sessions.label_files import FileLabel
from proxal.runtime.errors import ProxalError
from proxal.runtime.server import error_from_rpc

if TYPE_CHECKING:
    from proxal.orchestrator_service.demo.simulate import SimulateOutcome

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_ADDRESS = "127.0.0.1:50053"
SUBMIT_TIMEOUT_S = 120.0  # TrainSuccessor reads the session's labels before it answers

__all__ = [
    "Asvp",
    "AsvpStatus",
    "Client",
    "Deleted",
    "FeatureCheck",
    "Imported",
    "Item",
    "Job",
    "JobEvent",
    "JobFailedError",
    "LabelRecord",
    "Model",
    "Plasm",
    "Session",
    "Status",
    "Submitted",
    "Suggestion",
    "Undone",
    "UndoneItem",
    "Ups",
    "rpc_status",
]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Suggestion:
    """The proxy's guess for an item: its class, that class's predicted probability and the
    item's acquisition score (higher = more informative)."""

    label: str
    probability: float
    score: float

    @classmethod
    def from_proto(cls, message: pb.Suggestion) -> Suggestion:
        return cls(message.label, message.probability, message.score)


@dataclass(frozen=True)
class Item:
    """One text to label: its pool id, its text and the proxy's suggestion (None while the
    proxy cannot be fitted, or for items of a resumed lease)."""

    id: int
    text: str
    suggestion: Suggestion | None = None


@dataclass(frozen=True)
class Ups:
    """Pool subsampling between full rounds (UPS); 0 and None: the server's defaults
    (gamma 0.1, temperature 0.01, full_rounds 2, full_every 5)."""

    gamma: float = 0.0
    temperature: float = 0.0
    full_rounds: int = 0
    full_every: int | None = None

    def to_proto(self) -> pb.UpsSettings:
        ups = pb.UpsSettings(
            gamma=self.gamma, temperature=self.temperature, full_rounds=self.full_rounds
        )
        if self.full_every is not None:
            ups.full_every = self.full_every
        return ups

    @classmethod
    def from_proto(cls, u: pb.UpsSettings) -> Ups:
        every = u.full_every if u.HasField("full_every") else None
        return cls(u.gamma, u.temperature, u.full_rounds, every)


@dataclass(frozen=True)
class Asvp:
    """ASVP's background feature checks; 0, "" and None: the server's defaults (every 2
    rounds, LogME gap 0.03, PED on, a 4-epoch LoRA fine-tune at max_length 64)."""

    every_rounds: int | None = None
    growth_factor: float = 0.0
    threshold: float | None = None
    use_ped: bool | None = None
    finetune_method: str = ""
    finetune_epochs: int = 0
    max_length: int = 0
    finetune_batch_size: int = 0
    time_budget_s: float = 0.0
    keep_checkpoints: bool = False

    def to_proto(self) -> pb.AsvpSettings:
        asvp = pb.AsvpSettings(
            growth_factor=self.growth_factor,
            finetune_method=self.finetune_method,
            finetune_epochs=self.finetune_epochs,
            max_length=self.max_length,
            finetune_batch_size=self.finetune_batch_size,
            time_budget_s=self.time_budget_s,
            keep_checkpoints=self.keep_checkpoints,
        )
        if self.every_rounds is not None:
            asvp.every_rounds = self.every_rounds
        if self.threshold is not None:
            asvp.threshold = self.threshold
        if self.use_ped is not None:
            asvp.use_ped = self.use_ped
        return asvp

    @classmethod
    def from_proto(cls, a: pb.AsvpSettings) -> Asvp:
        return cls(
            a.every_rounds if a.HasField("every_rounds") else None,
            a.growth_factor,
            a.threshold if a.HasField("threshold") else None,
            a.use_ped if a.HasField("use_ped") else None,
            a.finetune_method,
            a.finetune_epochs,
            a.max_length,
            a.finetune_batch_size,
            a.time_budget_s,
            a.keep_checkpoints,
        )


@dataclass(frozen=True)
class Session:
    """A labeling session's settings and counts. `problem` (list_sessions only): why the
    server cannot serve it; `lineage`: the embedding versions it selected on, oldest first."""

    name: str
    pool: str
    embedding_version: str
    strategy: str
    classifier: str
    batch_size: int
    seed: int
    split: str
    classes: tuple[str, ...]
    labels: int
    rounds: int
    created_at: str = ""
    lease_seconds: float = 0.0
    problem: str = ""
    c: float = 0.0
    max_iter: int = 0
    balanced: bool = False
    ups: Ups | None = None
    asvp: Asvp | None = None
    lineage: tuple[str, ...] = ()
    initial_batch: str = "random"
    class_balanced: bool = False

    @classmethod
    def from_proto(cls, s: pb.Session) -> Session:
        return cls(
            s.session,
            s.pool,
            s.embedding_version,
            s.strategy,
            s.classifier,
            s.batch_size,
            s.seed,
            s.split,
            tuple(s.classes),
            s.labels,
            s.rounds,
            s.created_at,
            s.lease_seconds,
            s.problem,
            s.classifier_c,
            s.classifier_max_iter,
            s.classifier_balanced,
            Ups.from_proto(s.ups) if s.HasField("ups") else None,
            Asvp.from_proto(s.asvp) if s.HasField("asvp") else None,
            tuple(s.lineage),
            s.initial_batch or "random",
            s.class_balanced,
        )


@dataclass(frozen=True)
class FeatureCheck:
    """One ASVP feature check: its `action` ("refresh", "keep", "skip", "failed"), the
    LogME scores and gap (None when it did not score) and why it failed or was skipped."""

    round: int
    labels: int
    action: str
    version_before: str
    version_after: str
    logme_current: float | None
    logme_finetuned: float | None
    gap: float | None
    threshold: float
    seconds: float
    finished_at: float
    reason: str

    @classmethod
    def from_proto(cls, c: pb.FeatureCheck) -> FeatureCheck:
        return cls(
            c.round,
            c.labels,
            c.action,
            c.version_before,
            c.version_after,
            _finite(c.logme_current),
            _finite(c.logme_finetuned),
            _finite(c.gap),
            c.threshold,
            c.seconds,
            c.finished_at,
            c.reason,
        )


@dataclass(frozen=True)
class AsvpStatus:
    """A session's ASVP: whether a check runs now (and its `phase`), the last check (None
    before the first), counts since the orchestrator started, and when the next is due."""

    enabled: bool = False
    running: bool = False
    phase: str = ""
    last_check: FeatureCheck | None = None
    checks: int = 0
    failed_checks: int = 0
    next_due: str = ""

    @classmethod
    def from_proto(cls, a: pb.AsvpStatus) -> AsvpStatus:
        last = FeatureCheck.from_proto(a.last_check) if a.HasField("last_check") else None
        return cls(a.enabled, a.running, a.phase, last, a.checks, a.failed_checks, a.next_due)


@dataclass(frozen=True)
class StoppingSignal:
    """One stopping rule: its value (None until computable, `note` says why), threshold and
    whether it says the session can stop."""

    name: str
    rule: str
    value: float | None
    threshold: float
    stop: bool
    note: str

    @classmethod
    def from_proto(cls, x: pb.StoppingSignal) -> StoppingSignal:
        return cls(x.name, x.rule, _finite(x.value), x.threshold, x.stop, x.note)


@dataclass(frozen=True)
class Status:
    """Where a session stands: counts, versions, the proxy's estimated accuracy (None until
    two classes have two labels each; see `accuracy_note`) over `accuracy_classes` classes,
    labels per class (most first), the embedding lineage, ASVP's state and the stopping
    signals."""

    session: Session
    labels: int
    skipped: int
    leased: int
    remaining: int
    rounds: int
    embedding_version: str
    latest_version: str
    estimated_accuracy: float | None
    accuracy_note: str
    class_counts: dict[str, int]
    annotators: int
    labeled_classes: int = 0
    accuracy_classes: int = 0
    asvp: AsvpStatus = field(default_factory=AsvpStatus)
    lineage: tuple[str, ...] = ()
    stopping: tuple[StoppingSignal, ...] = ()

    @classmethod
    def from_proto(cls, s: pb.SessionStatus) -> Status:
        return cls(
            Session.from_proto(s.session),
            s.labels,
            s.skipped,
            s.leased,
            s.remaining,
            s.rounds,
            s.embedding_version,
            s.latest_version,
            _finite(s.estimated_accuracy),
            s.accuracy_note,
            {c.label: c.count for c in s.class_counts},
            s.annotators,
            s.labeled_classes,
            s.accuracy_classes,
            AsvpStatus.from_proto(s.asvp),
            tuple(s.lineage),
            tuple(StoppingSignal.from_proto(x) for x in s.stopping),
        )


@dataclass(frozen=True)
class Submitted:
    """What a submit wrote: `accepted` labels, the session's `total_labels` after it, and a
    `note` when some were not written."""

    accepted: int
    total_labels: int
    replayed: bool
    note: str


@dataclass(frozen=True)
class UndoneItem:
    """An item an undo gave back: its text and the label undone ("" for a skip)."""

    id: int
    text: str
    label: str


@dataclass(frozen=True)
class Undone:
    """What an undo took back (the items come back to this annotator to label again)."""

    items: tuple[UndoneItem, ...]
    total_labels: int
    replayed: bool


@dataclass(frozen=True)
class Deleted:
    """What deleting a session deleted with it."""

    session: str
    labels: int
    skipped: int
    label_events: int
    lease_events: int
    rounds: int


@dataclass(frozen=True)
class LabelRecord:
    """One exported label: the item, its text, its label and who gave it."""

    id: int
    text: str
    label: str
    annotator: str


@dataclass(frozen=True)
class Plasm:
    """PLASM options of a successor job: a teacher pseudo-labels the pool, `filter`
    ("uncertainty", "cleanlab" or "none") keeps some; 0 and "": the server's defaults."""

    filter: str = ""
    pool_sample: int = 0
    heldout: float = 0.0


def _state(state: int) -> str:
    """A JobState as a word: "queued", "running", "succeeded", "failed"."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


@dataclass(frozen=True)
class Job:
    """A submitted successor job: its id, state, the jobs ahead of it, where it trains and
    where its artifacts will be."""

    id: str
    state: str
    queued_ahead: int
    device: str
    model_uri: str


@dataclass(frozen=True)
class JobEvent:
    """One step of a successor job: `state` ("queued", "running", "succeeded", "failed"),
    the training `phase`, epoch and step (of `total_steps`) with its loss, a `message` for
    people (a failure's reason) and, once it succeeded, `model_uri`."""

    job_id: str = ""
    state: str = "unspecified"
    session: str = ""
    method: str = ""
    device: str = ""
    phase: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float = 0.0
    message: str = ""
    elapsed_s: float = 0.0
    model_uri: str = ""

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")

    @classmethod
    def from_proto(cls, e: pb.JobEvent) -> JobEvent:
        return cls(
            e.job_id,
            _state(e.state),
            e.session,
            e.method,
            e.device,
            e.phase,
            e.epoch,
            e.epochs,
            e.step,
            e.total_steps,
            e.loss,
            e.message,
            e.elapsed_s,
            e.model_uri,
        )


@dataclass(frozen=True)
class Model:
    """A trained successor: where it is (`uri`, `files`), how it scored on the test split
    (None without test rows) and its metrics.json as a dict."""

    session: str
    job_id: str
    method: str
    uri: str
    files: tuple[str, ...]
    test_accuracy: float | None
    test_macro_f1: float | None
    labels: int
    created_at: str
    device: str
    train_seconds: float
    metrics: dict[str, Any]

    @classmethod
    def from_proto(cls, m: pb.Model) -> Model:
        return cls(
            m.session,
            m.job_id,
            m.method,
            m.uri,
            tuple(m.files),
            _finite(m.test_accuracy),
            _finite(m.test_macro_f1),
            m.labels,
            m.created_at,
            m.device,
            m.train_seconds,
            json.loads(m.metrics_json) if m.metrics_json else {},
        )


class JobFailedError(ProxalError):
    """A successor job ended failed; `event` is its last event (the reason in `message`)."""

    def __init__(self, event: JobEvent):
        super().__init__(f"job {event.job_id} failed: {event.message}")
        self.event = event


def _domain_error(exc: grpc.RpcError) -> ProxalError:
    """The proxal error for a failed call, carrying the status name and the server's
    message for `rpc_status`."""
    error = error_from_rpc(exc, "orchestrator")
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    vars(error).update(rpc_status=code.name, rpc_details=details or "")
    return error


def rpc_status(exc: BaseException) -> tuple[str, str] | None:
    """(gRPC status name, the server's message) of an error a Client call raised, e.g.
    ("NOT_FOUND", "session 'x' not found"); None for one raised before any call."""
    status, details = getattr(exc, "rpc_status", None), getattr(exc, "rpc_details", None)
    if isinstance(status, str) and isinstance(details, str):
        return status, details
    return None


def _domain_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn a failed call's `grpc.RpcError` into proxal's error hierarchy."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise _domain_error(exc) from None

    return wrapper


class Client:
    """OrchestratorService at `address` (host:port), as `annotator`.

    TLS and the bearer token come from the environment, as for the CLI (PROXAL_TLS_CA,
    PROXAL_AUTH_TOKEN, ...). Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        address: str = "",
        annotator: str = "notebook",
        timeout: float = 60.0,
        retry_seconds: float = 30.0,
    ):
        """`address` empty: PROXAL_ORCHESTRATOR, else 127.0.0.1:50053 (`proxal up`'s)."""
        address = address or os.environ.get("PROXAL_ORCHESTRATOR", "") or DEFAULT_ADDRESS
        self.address = address
        self.annotator = annotator
        self._rpc = SessionClient(address, annotator, timeout, retry_seconds)

    def connect(self, seconds: float) -> None:
        """Wait up to `seconds` for the orchestrator; UnavailableError naming the address
        if it cannot be reached (fails fast, where calls retry for `retry_seconds`)."""
        self._rpc.connect(seconds)

    # sessions
    @_domain_errors
    def create_session(
        self,
        name: str,
        pool: str,
        *,
        classes: Sequence[str] = (),
        strategy: str = "margin",
        classifier: str = "logreg",
        batch_size: int = 10,
        seed: int = 0,
        split: str = "train",
        embedding_version: str = "",
        lease_seconds: float = 0.0,
        c: float = 0.0,
        max_iter: int = 0,
        balanced: bool = False,
        ups: Ups | None = None,
        asvp: Asvp | None = None,
        initial_batch: str = "",
        class_balanced: bool = False,
    ) -> Session:
        """A new session labelling `split` of `pool`; `classes` default to the split's gold
        labels (a split without them needs `classes`). The proxy `classifier` takes `c`
        (> 0), `max_iter` and `balanced` (0: its defaults); `ups` subsamples the pool
        between full rounds; `asvp` checks features in the background (needs `proxal serve
        --encoder`, else FailedPreconditionError); `initial_batch` ("random" | "kmeans")
        picks while no proxy can be fitted; `class_balanced` spreads each batch over the
        predicted classes. Empty strings: the server's defaults."""
        request = pb.CreateSessionRequest(
            session=name,
            pool=pool,
            classes=list(classes),
            strategy=strategy,
            classifier=classifier,
            batch_size=batch_size,
            seed=seed,
            split=split,
            embedding_version=embedding_version,
            lease_seconds=lease_seconds,
            classifier_c=c,
            classifier_max_iter=max_iter,
            classifier_balanced=balanced,
            initial_batch=initial_batch,
            class_balanced=class_balanced,
        )
        if ups is not None:
            request.ups.CopyFrom(ups.to_proto())
        if asvp is not None:
            request.asvp.CopyFrom(asvp.to_proto())
        return Session.from_proto(self._rpc.create(request))

    @_domain_errors
    def get_session(self, name: str) -> Session:
        return Session.from_proto(self._rpc.session(name))

    @_domain_errors
    def list_sessions(self, pool: str = "") -> list[Session]:
        return [Session.from_proto(s) for s in self._rpc.list_sessions(pool)]

    @_domain_errors
    def status(self, session: str, stopping: bool = True) -> Status:
        """The session's status; `stopping` False leaves the stopping signals out (faster)."""
        return Status.from_proto(self._rpc.status(session, stopping))

    @_domain_errors
    def delete_session(self, name: str, force: bool = False) -> Deleted:
        """Delete a session (one with labels only with `force`) → what went with it."""
        d = self._rpc.delete(name, force)
        return Deleted(d.session, d.labels, d.skipped, d.label_events, d.lease_events, d.rounds)

    # labelling
    @_domain_errors
    def next_batch(self, session: str, k: int = 0) -> list[Item]:
        """The next items to label (leased to this client's annotator); `k` 0: the session's
        batch size. Empty when nothing is left."""
        return [
            Item(
                i.id,
                i.text,
                Suggestion.from_proto(i.suggestion) if i.HasField("suggestion") else None,
            )
            for i in self._rpc.next_batch(session, k).items
        ]

    @_domain_errors
    def submit(
        self,
        session: str,
        labels: Mapping[int, str] | Iterable[tuple[int, str]],
        relabel: bool = False,
    ) -> Submitted:
        """Label items: {id: label} or (id, label) pairs; `relabel` to change given labels."""
        pairs = list(labels.items() if isinstance(labels, Mapping) else labels)
        reply = self._rpc.submit(session, pairs, relabel=relabel)
        return Submitted(reply.accepted, reply.total_labels, reply.replayed, reply.note)

    @_domain_errors
    def skip(self, session: str, ids: Sequence[int]) -> Submitted:
        reply = self._rpc.skip(session, ids)
        return Submitted(reply.accepted, reply.total_labels, reply.replayed, reply.note)

    @_domain_errors
    def undo(self, session: str) -> Undone:
        """Undo this annotator's last label or skip; its items come back to label again."""
        reply = self._rpc.undo(session)
        items = tuple(UndoneItem(x.id, x.text, x.label) for x in reply.items)
        return Undone(items, reply.total_labels, reply.replayed)

    @_domain_errors
    def release(self, session: str) -> int:
        """Hand this annotator's leased, unlabelled items back to the pool → how many."""
        return self._rpc.release(session)

    # label files
    @_domain_errors
    def import_labels(
        self,
        session: str,
        labels: Sequence[FileLabel] | Mapping[int, str],
        overwrite: bool = False,
    ) -> Imported:
        """Add labels (from `parse_labels`, or {id: label}) without leasing; existing ones
        are replaced only with `overwrite` → `written`, `already_labeled` and notes."""
        if isinstance(labels, Mapping):
            labels = [FileLabel(i, lab) for i, lab in labels.items()]
        return self._rpc.import_labels(session, list(labels), overwrite=overwrite)

    @_domain_errors
    def export(self, session: str) -> list[LabelRecord]:
        """The session's current labels, with their texts and annotators."""
        data = self._rpc.export(session, "jsonl")
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        return [
            LabelRecord(int(r["id"]), str(r["text"]), str(r["label"]), str(r["annotator"]))
            for r in rows
        ]

    @_domain_errors
    def export_bytes(self, session: str, fmt: str = "jsonl") -> bytes:
        """The labels as a file's bytes: `fmt` "jsonl", "csv", "label-studio", "parquet" or
        "hf" (a tar of data/train.jsonl and a README.md dataset card)."""
        return self._rpc.export(session, fmt)

    def export_file(self, session: str, path: str | Path, fmt: str = "") -> Path:
        """Write the labels to `path`: JSONL, CSV, Label Studio JSON or Parquet (from the
        suffix .jsonl, .csv, .json, .parquet, or `fmt`; "hf" writes the tar) → the path."""
        from proxal.orchestrator_service.sessions.label_files import format_of

        path = Path(path)
        path.write_bytes(self.export_bytes(session, format_of(path, fmt)))
        return path

    # successors
    @_domain_errors
    def train_successor(
        self,
        session: str,
        method: str = "auto",
        *,
        epochs: int = 0,
        batch_size: int = 0,
        max_length: int = 0,
        validation_fraction: float = 0.0,
        patience: int = 0,
        seed: int = 0,
        test_split: str = "",
        onnx: bool = True,
        device: str = "",
        time_budget_s: float = 0.0,
        model: str = "",
        plasm: Plasm | None = None,
    ) -> Job:
        """Queue a successor fine-tuned on the session's labels → the job (follow it with
        `watch_job` or `wait`). `method`: "full", "lp_ft", "lora", "bottleneck" or "auto"
        (ASVP's LP-FT/FT rule); 0 and "": the server's defaults (6 epochs, batch 32, max
        length 64, device "auto"); `model`: an encoder checkpoint directory on the
        orchestrator's machine (default: MiniLM-L6); `plasm`: add filtered pseudo-labels.
        Not retried: a retry could queue the job twice."""
        plasm_options = (
            pb.PlasmOptions()
            if plasm is None
            else pb.PlasmOptions(
                enabled=True,
                filter=plasm.filter,
                pool_sample=plasm.pool_sample,
                heldout=plasm.heldout,
            )
        )
        request = pb.TrainSuccessorRequest(
            session=session,
            method=method,
            epochs=epochs,
            batch_size=batch_size,
            max_length=max_length,
            validation_fraction=validation_fraction,
            patience=patience,
            seed=seed,
            test_split=test_split,
            skip_onnx=not onnx,
            device=device,
            time_budget_s=time_budget_s,
            model=model,
            plasm=plasm_options,
        )
        r = self._rpc.train_successor(request, SUBMIT_TIMEOUT_S)
        return Job(r.job_id, _state(r.state), r.queued_ahead, r.device, r.model_uri)

    def watch_job(self, job_id: str) -> Iterator[JobEvent]:
        """The job's events, from its first, until it ends (succeeded or failed)."""
        try:
            for event in self._rpc.watch_job(job_id):
                yield JobEvent.from_proto(event)
        except grpc.RpcError as exc:
            raise _domain_error(exc) from None

    def wait(self, job_id: str) -> JobEvent:
        """Block until the job ends → its last event; JobFailedError if it failed."""
        last = JobEvent(job_id)
        for event in self.watch_job(job_id):
            last = event
        if last.state != "succeeded":
            raise JobFailedError(last)
        return last

    @_domain_errors
    def list_models(self, session: str = "") -> list[Model]:
        """The trained successors (of `session`; empty: all), newest first."""
        return [Model.from_proto(m) for m in self._rpc.list_models(session)]

    @staticmethod
    def simulate(
        train: str | Path,
        test: str | Path | None = None,
        *,
        test_fraction: float | None = None,
        text_field: str = "text",
        label_field: str = "label",
        out: str | Path = "proxal-simulate",
        **loop: Any,
    ) -> SimulateOutcome:
        """`proxal simulate` in this process (it starts its own encoder and proxy) → the
        outcome: `report` (report.md's path), `ssr` per strategy, `doc` (report.json).
        `loop`: LoopConfig fields (strategies, seeds, initial_size, batch_size, rounds,
        ups, asvp) and `random_factor`."""
        from proxal.orchestrator_service.demo.simulate import (
            DataSource,
            SimulateConfig,
            run_simulate,
        )
        from proxal.orchestrator_service.engine.simulation import LoopConfig
        from proxal.orchestrator_service.sessions.pool_files import Fields

        factor = float(loop.pop("random_factor", 2.0))
        config = SimulateConfig(
            data=DataSource(
                train=Path(train),
                test=None if test is None else Path(test),
                test_fraction=test_fraction,
                fields=Fields(text=text_field, label=label_field),
            ),
            out_dir=Path(out),
            loop=LoopConfig(**loop),
            random_factor=factor,
        )
        return run_simulate(config)

    def close(self) -> None:
        self._rpc.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
