"""Successor training as a job of the orchestrator: a registry, a background runner and the
model store under the store URI.

`JobRunner.submit` checks a request (method, options, the session and its labels) and
queues it; a worker thread (one by default, so a second job waits queued) fine-tunes the
successor with `finetune_session` into a temporary directory and copies it to
``<store>/models/<session>/<job-id>/`` (a local directory or object storage), writing
``metrics.json`` last: a model directory with metrics.json is complete, one without is a job
that died, and `list_models` skips it. Every job records `JobEvent`s (queued, running with
step/epoch/loss, succeeded or failed with its reason) that `Job.wait_events` hands to
watchers.

Every job is also recorded in the session database (`Store.save_job`): on submit, on each
state change (the final one before watchers see it, retried) and every RECORD_EVERY_S while
it is queued or running (the latest event: progress, and `updated_at` as a heartbeat). So
`JobRunner.get` answers for a job of another orchestrator, or of one that restarted, as a
`RecordedJob` that polls the database; a queued or running record not refreshed for
ORPHAN_AFTER_S is reported failed (its orchestrator stopped). No gRPC here: the servicer
(orchestrator/rpc/jobs_servicer.py) adapts it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from proxal.orchestrator_service.successor.config import (
    AUTO,
    JOB_METHODS,
    SuccessorConfig,
    TrainingStep,
    resolve_device,
)
from proxal.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ProxalError,
    ResourceExhaustedError,
)
from proxal.runtime.names import check_name
from proxal.store.records import JobRecord
from proxal.store.store import local_store_path, utcnow

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from proxal.orchestrator_service.successor.finetune import SessionLabels
    from proxal.orchestrator_service.successor.plasm import PlasmConfig
    from proxal.store import Store

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
MODELS_DIR = "models"
METRICS_FILE = "metrics.json"
PROGRESS_EVERY_S = 0.25  # at most ~4 step events a second reach the watchers
MAX_QUEUED = 16  # jobs waiting behind the running ones; more is RESOURCE_EXHAUSTED
CANCELLED = "cancelled: the orchestrator is shutting down; submit the job again"
RECORD_EVERY_S = 5.0  # a queued or running job's record is refreshed this often
ORPHAN_AFTER_S = 60.0  # a queued/running record older than this: its orchestrator stopped
POLL_S = 1.0  # how often a watcher of a recorded job reads its record
FINAL_TRIES = 4  # attempts at writing a job's final state
FINAL_RETRY_S = 0.5  # the first wait between them (doubling)
ORPHANED = (
    "its orchestrator stopped before the job finished (no progress for {age:.0f} s); "
    "submit it again"
)


class JobCancelled(ProxalError):
    """A running job stopped because its runner closed."""


@dataclass(frozen=True)
class JobRequest:
    """What to train: `method` is one of JOB_METHODS ("auto": ASVP's LP-FT/FT rule picks
    lp_ft or full); `config` holds the other hyper-parameters (its method is replaced)."""

    session: str
    method: str = "full"
    config: SuccessorConfig = field(default_factory=SuccessorConfig)
    plasm: PlasmConfig | None = None
    test_split: str = "test"
    onnx: bool = True
    model_path: str | None = None


@dataclass(frozen=True)
class JobEvent:
    """One progress report of a job (see the JobEvent message of orchestrator.proto)."""

    job_id: str
    state: str
    session: str
    method: str
    device: str
    phase: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float = math.nan
    message: str = ""
    elapsed_s: float = 0.0
    model_uri: str = ""


class Job:
    """A submitted job: its request, the labels snapshot it trains on, and its events."""

    def __init__(self, job_id: str, request: JobRequest, data: SessionLabels, device: str):
        self.id = job_id
        self.request = request
        self.data = data
        self.device = device
        self.model_uri = ""
        self.events: list[JobEvent] = []
        self._cond = threading.Condition()
        self._started = 0.0
        self._last_step = -math.inf
        self.cancelled = threading.Event()
        self.record_lock = threading.Lock()  # orders the writes of its database record
        self.recorded_final = False  # its final state is in the database

    @property
    def last(self) -> JobEvent:
        with self._cond:
            return self.events[-1]

    @property
    def done(self) -> bool:
        return self.last.state in (SUCCEEDED, FAILED)

    def next_event(self, **changes: Any) -> JobEvent:
        """The last event with `changes` (and the time since the job started), unpublished."""
        with self._cond:
            if self.events:
                event = replace(self.events[-1], **changes)
            else:
                base = {"method": self.request.method, "device": self.device}
                event = JobEvent(self.id, QUEUED, self.request.session, **{**base, **changes})
        if self._started:
            event = replace(event, elapsed_s=time.monotonic() - self._started)
        return event

    def publish(self, event: JobEvent) -> JobEvent:
        """Append `event` and wake the watchers."""
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()
        return event

    def emit(self, **changes: Any) -> JobEvent:
        """Publish the last event with `changes` (memory only: the runner records it)."""
        return self.publish(self.next_event(**changes))

    def start(self) -> None:
        self._started = time.monotonic()

    def on_step(self, step: TrainingStep) -> None:
        """A fine-tune's step: an event at most every PROGRESS_EVERY_S, and the last one.
        Raises JobCancelled once the runner closes."""
        if self.cancelled.is_set():
            raise JobCancelled(CANCELLED)
        now = time.monotonic()
        if now - self._last_step < PROGRESS_EVERY_S and step.step < step.total_steps:
            return
        self._last_step = now
        self.emit(
            phase=step.phase,
            epoch=step.epoch,
            epochs=step.epochs,
            step=step.step,
            total_steps=step.total_steps,
            loss=step.loss,
            message=f"training ({step.phase}, epoch {step.epoch} of {step.epochs})",
        )

    def wait_events(self, since: int, timeout: float) -> list[JobEvent]:
        """The events after the first `since`, waiting up to `timeout` s for one."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) > since, timeout)
            return self.events[since:]


class WatchedJob(Protocol):
    """What a watcher needs of a job, in memory (`Job`) or recorded (`RecordedJob`)."""

    id: str

    @property
    def last(self) -> JobEvent: ...

    @property
    def done(self) -> bool: ...

    def wait_events(self, since: int, timeout: float) -> list[JobEvent]: ...


class RecordedJob:
    """A job known from its database record only (another orchestrator's, or one from
    before a restart): its recorded last event, then each change read every POLL_S."""

    def __init__(self, store: Store, record: JobRecord) -> None:
        self.id = record.job_id
        self.store = store
        self.events = [recorded_event(record)]
        self._polled = time.monotonic()

    @property
    def last(self) -> JobEvent:
        return self.events[-1]

    @property
    def done(self) -> bool:
        return self.last.state in (SUCCEEDED, FAILED)

    def wait_events(self, since: int, timeout: float) -> list[JobEvent]:
        """The events after the first `since`, reading the record up to `timeout` s for one."""
        deadline = time.monotonic() + timeout
        while len(self.events) <= since and not self.done:
            now = time.monotonic()
            poll_at = self._polled + POLL_S
            if poll_at > deadline:
                time.sleep(max(0.0, deadline - now))
                break
            time.sleep(max(0.0, poll_at - now))
            self.poll()
        return self.events[since:]

    def poll(self) -> None:
        """Read the record; a changed last event (or an orphaned job) becomes a new event."""
        self._polled = time.monotonic()
        try:
            record = self.store.get_job(self.id)
        except Exception as exc:  # a database hiccup: the next poll tries again
            log.warning("successor job %s: could not read its record: %s", self.id, exc)
            return
        event = recorded_event(record)
        if json_ready(asdict(event)) != json_ready(asdict(self.last)):
            self.events.append(event)


def recorded_event(record: JobRecord, now: float | None = None) -> JobEvent:
    """The record's last event; a queued or running one not refreshed for ORPHAN_AFTER_S
    is failed: its orchestrator stopped before the job finished."""
    known = {f.name for f in fields(JobEvent)}
    data = {k: v for k, v in record.last_event.items() if k in known}
    data.update(job_id=record.job_id, session=record.session, state=record.state)
    data.setdefault("method", str(record.request.get("method", "")))
    data.setdefault("device", "")
    if record.model_uri:
        data["model_uri"] = record.model_uri
    if data.get("loss") is None:
        data["loss"] = math.nan
    event = JobEvent(**data)
    age = (time.time() if now is None else now) - record.updated_at
    if event.state in (QUEUED, RUNNING) and age > ORPHAN_AFTER_S:
        event = replace(event, state=FAILED, message=ORPHANED.format(age=age))
    return event


def job_record(job: Job, event: JobEvent, owner: str) -> JobRecord:
    """The database record of `job` with `event` as its last, refreshed now."""
    return JobRecord(
        job_id=job.id,
        session=job.request.session,
        state=event.state,
        request=json_ready(asdict(job.request)),
        last_event=json_ready(asdict(event)),
        model_uri=event.model_uri,
        owner=owner,
        updated_at=time.time(),
    )


def json_ready(value: Any) -> Any:
    """`value` as JSON can hold it: NaN and infinities are None, tuples lists, others str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def runner_owner() -> str:
    """An id of one runner: hostname:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ModelRecord:
    """A stored successor: its directory `uri`, the file names in it and its metrics."""

    session: str
    job_id: str
    uri: str
    files: tuple[str, ...]
    metrics: dict[str, Any]


class JobRunner:
    """Queues successor jobs over `store` and runs them `workers` at a time (threads); at
    most `max_queued` wait. `close` cancels what is queued or running."""

    def __init__(self, store: Store, workers: int = 1, max_queued: int = MAX_QUEUED) -> None:
        if workers < 1 or max_queued < 0:
            raise InvalidArgumentError(
                f"workers must be >= 1 and max_queued >= 0, got {workers}, {max_queued}"
            )
        self.store = store
        self.workers = workers
        self.max_queued = max_queued
        self._closed = False
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running = 0
        self.owner = runner_owner()  # the `owner` of the jobs it records
        self._beat: threading.Thread | None = None

    def submit(self, request: JobRequest) -> tuple[Job, int]:
        """Check `request`, snapshot the session's labels, queue the job → (job, jobs ahead).

        InvalidArgumentError for a bad method or option, NotFoundError for an unknown or
        deleted session, FailedPreconditionError for fewer than 2 labelled classes."""
        device = check_request(request)
        data = _snapshot(self.store, request)
        job = Job(f"job-{uuid.uuid4().hex[:12]}", request, data, device)
        with self._lock:
            if self._closed:
                raise FailedPreconditionError("the orchestrator is shutting down: submit later")
            if self._queue.qsize() >= self.max_queued:
                raise ResourceExhaustedError(
                    f"{self._queue.qsize()} successor jobs are queued already: wait for one to "
                    "finish (WatchJob) and submit again"
                )
            ahead = self._queue.qsize() + self._running
            self._jobs[job.id] = job
            job.emit(message=f"queued ({ahead} job(s) ahead)")
            self._queue.put(job)
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name="successor-job", daemon=True)
                self._threads.append(thread)
                thread.start()
            if self._beat is None:
                self._beat = threading.Thread(
                    target=self._heartbeat, name="successor-job-records", daemon=True
                )
                self._beat.start()
        self._record(job)  # before the id is returned: any orchestrator can answer for it
        return job, ahead

    def get(self, job_id: str) -> WatchedJob:
        """The job of this runner, else the job as recorded in the session database (by
        another orchestrator, or before a restart). NotFoundError when neither has it."""
        if not job_id:
            raise InvalidArgumentError("job_id is required: pass the id TrainSuccessor returned")
        job_id = job_id[:80]  # an id is 16 characters: a longer one is unknown
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            return job
        try:
            record = self.store.get_job(job_id)
        except NotFoundError:
            raise NotFoundError(
                f"job {job_id!r} is unknown: no orchestrator of this session database recorded "
                "it; pass an id TrainSuccessor returned (ListModels lists the stored models)"
            ) from None
        return RecordedJob(self.store, record)

    def model_uri(self, session: str, job_id: str) -> str:
        return f"{self.store.uri}/{MODELS_DIR}/{session}/{job_id}"

    def close(self) -> None:
        """Cancel every queued job and stop the running ones at their next step."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancelled.set()
        for _ in self._threads:
            self._queue.put(None)  # wakes a worker to see the close

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled.is_set():
                self._transition(job, state=FAILED, message=CANCELLED)
                continue
            with self._lock:
                self._running += 1
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running -= 1

    def _run(self, job: Job) -> None:
        """Train, store the artifacts, end the job succeeded or failed with its reason."""
        job.start()
        log.info(
            "successor job %s (session %r): training on %s", job.id, job.data.session, job.device
        )
        self._transition(job, state=RUNNING, message=f"running on {job.device}")
        try:
            uri = self._train_and_store(job)
        except ProxalError as exc:
            log.warning("successor job %s failed: %s", job.id, exc)
            self._transition(job, state=FAILED, message=str(exc))
        except Exception as exc:  # a bug or a broken environment: keep it in the log
            log.exception("successor job %s failed", job.id)
            self._transition(job, state=FAILED, message=f"{type(exc).__name__}: {exc}")
        else:
            self._transition(job, state=SUCCEEDED, model_uri=uri, message=f"stored at {uri}")

    # ------------------------------------------------------------ the database record
    def _transition(self, job: Job, **changes: Any) -> JobEvent:
        """Record the job's next event (a state change), then publish it: a watcher that
        sees a state finds it recorded. A final state's write is tried FINAL_TRIES times."""
        with job.record_lock:
            event = job.next_event(**changes)
            final = event.state in (SUCCEEDED, FAILED)
            saved = self._save(job, event, FINAL_TRIES if final else 1)
            job.recorded_final = saved and final
            return job.publish(event)

    def _record(self, job: Job) -> None:
        """Write the job's latest event (progress, and a fresh `updated_at`) unless its
        final state is recorded already."""
        with job.record_lock:
            if not job.recorded_final:
                event = job.last
                job.recorded_final = self._save(job, event, 1) and job.done

    def _save(self, job: Job, event: JobEvent, tries: int) -> bool:
        """save_job, `tries` times at most; a failure is a warning, never the job's end."""
        error: Exception | None = None
        for attempt in range(tries):
            try:
                self.store.save_job(job_record(job, event, self.owner))
                return True
            except Exception as exc:  # the database is down or busy: the job goes on
                error = exc
            if attempt + 1 < tries:
                time.sleep(FINAL_RETRY_S * 2**attempt)
        log.warning(
            "successor job %s: could not record its %s event in the session database "
            "(%d tries): %s",
            job.id,
            event.state,
            tries,
            error,
        )
        return False

    def _heartbeat(self) -> None:
        """Every RECORD_EVERY_S, write the records of the jobs not finished (and retry a
        final state that could not be written); ends once the runner closed and its jobs
        are done."""
        while True:
            time.sleep(RECORD_EVERY_S)
            with self._lock:
                jobs = [job for job in self._jobs.values() if not job.recorded_final]
                ending = self._closed and all(job.done for job in jobs)
            for job in jobs:
                self._record(job)
            if ending:
                return

    def _train_and_store(self, job: Job) -> str:
        from proxal.orchestrator_service.successor.finetune import finetune_session

        request = job.request
        method, reason = request.method, ""
        if method == AUTO:
            job.emit(message="auto: choosing between LP-FT and full fine-tuning (ASVP's rule)")
            method, reason = choose_method(self.store, job.data, request.config, job.on_step)
            job.emit(method=method, message=f"auto chose {method}: {reason}")
        config = replace(request.config, method=method)
        with tempfile.TemporaryDirectory(prefix="proxal-successor-") as tmp:
            metrics = finetune_session(
                self.store,
                job.data.session,
                tmp,
                config,
                test_split=request.test_split,
                onnx=request.onnx,
                progress=job.on_step,
                model_path=request.model_path,
                plasm=request.plasm,
                data=job.data,
            )
            metrics.update(job_id=job.id, created_at=utcnow(), method_asked=request.method)
            if reason:
                metrics["method_reason"] = reason
            job.emit(message="storing the artifacts")
            uri = self.model_uri(job.data.session, job.id)
            write_model(self.store, Path(tmp), uri, metrics)
        return uri

    def list_models(self, session: str = "") -> list[ModelRecord]:
        return list_models(self.store, session)


def check_request(request: JobRequest) -> str:
    """InvalidArgumentError for an unknown method or a missing checkpoint → the device type
    the job will train on ("cuda" or "cpu"). The options were checked by SuccessorConfig."""
    if request.method not in JOB_METHODS:
        raise InvalidArgumentError(
            f"method must be one of {', '.join(JOB_METHODS)}, got {request.method[:80]!r}"
        )
    check_name("split", request.test_split)
    if request.model_path:
        path = Path(request.model_path)
        try:
            missing = [n for n in ("config.json", "model.safetensors") if not (path / n).is_file()]
        except (OSError, ValueError):  # a name the file system cannot take
            missing = ["config.json"]
        if missing:
            raise InvalidArgumentError(
                f"model {path} is not a Hugging Face encoder checkpoint directory on the "
                f"orchestrator's machine (no {' or '.join(missing)})"
            )
    return resolve_device(request.config.device).type


def _snapshot(store: Store, request: JobRequest) -> SessionLabels:
    """The session's labels now (NotFound / FailedPrecondition), with the checks that need
    them: the validation split fits, PLASM has unlabeled texts."""
    from proxal.orchestrator_service.successor.finetune import session_labels, unlabeled_rows
    from proxal.orchestrator_service.successor.training import validation_split

    data = session_labels(store, request.session)
    if request.config.validation_fraction > 0:
        validation_split(data.labels, request.config.validation_fraction, request.config.seed)
    if request.plasm is not None:
        unlabeled_rows(store, request.session, data)
    return data


def choose_method(
    store: Store, data: SessionLabels, config: SuccessorConfig, progress: Any = False
) -> tuple[str, str]:
    """ASVP's LP-FT/FT rule for a session → (method, reason).

    The session's last ASVP check decides when it ran one (recorded with its round);
    otherwise a probe: fine-tune (full) holding out `validation_fraction` of the labels (0.2
    when 0), fit a logistic-regression proxy on the session's stored embeddings of the rest,
    and count held-out texts the proxy gets right and the fine-tuned model wrong (B1) and the
    reverse (B2); `asvp.successor_rule(B1, B2)`.
    """
    from proxal.orchestrator_service.engine.asvp import successor_rule

    for rnd in reversed(store.read_rounds(data.session)):
        decision = rnd.proxy_spec.get("asvp") if isinstance(rnd.proxy_spec, dict) else None
        if isinstance(decision, dict) and decision.get("action") in ("keep", "refresh"):
            return str(decision["successor_method"]), (
                f"the session's ASVP check at round {rnd.round}: {decision['successor_reason']}"
            )
    from proxal.orchestrator_service.successor.training import validation_split

    fraction = config.validation_fraction or 0.2
    try:
        validation_split(data.labels, fraction, config.seed)
    except InvalidArgumentError:
        return "full", "too few labels to hold any out for the LP-FT/FT rule: plain fine-tuning"
    b1, b2 = _probe(
        store, data, replace(config, method="full", validation_fraction=fraction), progress
    )
    return successor_rule(b1, b2)


def _probe(
    store: Store, data: SessionLabels, config: SuccessorConfig, progress: Any
) -> tuple[int, int]:
    """(B1, B2) of a held-out probe: a fine-tuned model vs a logistic regression on the
    session's embedding version (see `choose_method`)."""
    import numpy as np
    from proxal.orchestrator_service.successor.plasm import _staged
    from proxal.orchestrator_service.successor.training import fine_tune_successor
    from sklearn.linear_model import LogisticRegression

    model = fine_tune_successor(
        data.texts, data.labels, len(data.classes), config, progress=_staged(progress, "probe")
    )
    assert model.history is not None  # a freshly trained successor has one
    held = np.asarray(model.history.validation_indices, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(data.labels)), held)
    version = store.get_session(data.session).embedding_version
    vectors = store.lookup(data.pool, version, data.ids)
    labels = np.asarray(data.labels, dtype=np.int64)
    proxy = LogisticRegression(max_iter=1000).fit(vectors[train], labels[train])
    proxy_pred = proxy.predict(vectors[held])
    tuned_pred = model.predict([data.texts[i] for i in held])
    truth = labels[held]
    b1 = int(np.sum((proxy_pred == truth) & (tuned_pred != truth)))
    b2 = int(np.sum((tuned_pred == truth) & (proxy_pred != truth)))
    return b1, b2


# ---------------------------------------------------------------- the model store


def _filesystem(store: Store, uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for `uri` (under the store) with the store's options, and the
    path of `uri` in it. s3:// takes the store's aws_* options (as Lance does)."""
    import pyarrow.fs as pafs

    local = local_store_path(uri)
    if local is not None:
        return pafs.LocalFileSystem(), str(local.resolve())
    scheme, _, path = uri.partition("://")
    if scheme != "s3":
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, path
    options = dict(store.storage_options or {})
    endpoint = options.get("aws_endpoint") or options.get("endpoint") or ""
    allow_http = options.get("allow_http", "").lower() == "true"
    kwargs: dict[str, Any] = {
        "access_key": options.get("aws_access_key_id"),
        "secret_key": options.get("aws_secret_access_key"),
        "session_token": options.get("aws_session_token"),
        "region": options.get("aws_region") or options.get("region"),
    }
    if endpoint:
        web, _, host = endpoint.partition("://")
        kwargs["endpoint_override"] = host or web
        kwargs["scheme"] = web if host else ("http" if allow_http else "https")
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None}), path


def write_model(store: Store, local: Path, uri: str, metrics: dict[str, Any]) -> None:
    """Copy the files of `local` to `uri`, then metrics.json (last: the model is complete)."""
    import pyarrow.fs as pafs

    filesystem, path = _filesystem(store, uri)
    if isinstance(filesystem, pafs.LocalFileSystem):  # object stores have no directories
        filesystem.create_dir(path, recursive=True)
    pafs.copy_files(
        str(local),
        path,
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=filesystem,
    )
    names = sorted(p.name for p in local.iterdir() if p.is_file() and p.name != METRICS_FILE)
    document = {**metrics, "files": [*names, METRICS_FILE], "uri": uri}
    with filesystem.open_output_stream(f"{path}/{METRICS_FILE}") as out:
        out.write((json.dumps(document, indent=2) + "\n").encode())


def list_models(store: Store, session: str = "") -> list[ModelRecord]:
    """Complete models under <store>/models/ (of `session` when given), newest first."""
    import pyarrow.fs as pafs

    root = f"{store.uri}/{MODELS_DIR}" + (f"/{session}" if session else "")
    filesystem, path = _filesystem(store, root)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    records = []
    for info in filesystem.get_file_info(selector):
        parts = info.path[len(path) :].strip("/").split("/")
        if info.type != pafs.FileType.File or parts[-1] != METRICS_FILE:
            continue
        if len(parts) != (2 if session else 3):
            continue
        with filesystem.open_input_stream(info.path) as f:
            metrics = json.loads(f.read().decode())
        job_dir = "/".join(parts[:-1])
        owner = session or parts[0]
        records.append(
            ModelRecord(
                session=owner,
                job_id=parts[-2],
                uri=f"{root}/{job_dir}",
                files=tuple(metrics.get("files", [])),
                metrics=metrics,
            )
        )
    return sorted(records, key=lambda r: str(r.metrics.get("created_at", "")), reverse=True)


def metrics_summary(record: ModelRecord) -> dict[str, Any]:
    """The headline numbers of a stored model (NaN where it was not evaluated)."""
    test = record.metrics.get("test") or {}
    return {
        "method": record.metrics.get("method", ""),
        "test_accuracy": test.get("accuracy", math.nan),
        "test_macro_f1": test.get("macro_f1", math.nan),
        "labels": record.metrics.get("labels", 0),
        "created_at": record.metrics.get("created_at", ""),
        "device": record.metrics.get("device", ""),
        "train_seconds": record.metrics.get("train_seconds", 0.0),
    }
