"""The proto-level client of OrchestratorService for one annotator, under `Client`
(orchestrator/rpc/client.py, which the CLI and notebooks use).

Every write gets a fresh request id, and a write that fails because the orchestrator is
unreachable (UNAVAILABLE, DEADLINE_EXCEEDED: it may be restarting) is retried with the
same id until `retry_seconds` pass. The server answers a retry of a committed request from
its log, so a label is never counted twice however often a call is retried.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.rpc.clients import open_channel
from proxal.orchestrator_service.sessions.label_files import FileLabel
from proxal.runtime.errors import UnavailableError

T = TypeVar("T")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
IMPORT_CHUNK = 10_000
EXPORT_FORMATS = {
    "jsonl": pb.EXPORT_FORMAT_JSONL,
    "csv": pb.EXPORT_FORMAT_CSV,
    "label-studio": pb.EXPORT_FORMAT_LABEL_STUDIO,
    "parquet": pb.EXPORT_FORMAT_PARQUET,
    "hf": pb.EXPORT_FORMAT_HF_DATASET,
}


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Imported:
    """What an import wrote: `written` labels, `already_labeled` left as they were."""

    written: int
    already_labeled: int
    notes: tuple[str, ...] = ()


class SessionClient:
    """OrchestratorService calls as `annotator`, with retries that keep their request id."""

    def __init__(
        self,
        address: str,
        annotator: str = "default",
        timeout: float = 60.0,
        retry_seconds: float = 60.0,
    ):
        self.address = address
        self.annotator = annotator
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._channel = open_channel(address)
        self.stub = pb_grpc.OrchestratorServiceStub(self._channel)

    def connect(self, seconds: float) -> None:
        """Wait up to `seconds` for the orchestrator; UnavailableError naming the address
        if it cannot be reached (so a command line fails fast, not after `retry_seconds`)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=seconds)
        except grpc.FutureTimeoutError:
            raise UnavailableError(
                f"cannot reach the orchestrator at {self.address} (--orchestrator, env "
                f"PROXAL_ORCHESTRATOR) within {seconds:g} s; is `proxal serve` running there?"
            ) from None

    def _call(self, fn: Callable[..., T], request: object) -> T:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.1
        while True:
            try:
                return fn(request, timeout=self.timeout, wait_for_ready=True)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code not in RETRYABLE or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, 2.0)

    # reads
    def session(self, session: str) -> pb.Session:
        return self._call(self.stub.GetSession, pb.GetSessionRequest(session=session))

    def status(self, session: str, stopping: bool = True) -> pb.SessionStatus:
        """The session's status; `stopping` False leaves the stopping signals out (faster)."""
        request = pb.StatusRequest(session=session, skip_stopping=not stopping)
        return self._call(self.stub.Status, request)

    def list_sessions(self, pool: str = "") -> list[pb.Session]:
        reply = self._call(self.stub.ListSessions, pb.ListSessionsRequest(pool=pool))
        return list(reply.sessions)

    def export(self, session: str, fmt: str = "jsonl") -> bytes:
        request = pb.ExportLabelsRequest(session=session, format=EXPORT_FORMATS[fmt])
        chunks = self._call(lambda r, **kw: list(self.stub.ExportLabels(r, **kw)), request)
        return b"".join(c.data for c in chunks)

    # writes
    def create(self, request: pb.CreateSessionRequest) -> pb.Session:
        return self._call(self.stub.CreateSession, request)

    def delete(self, session: str, force: bool = False) -> pb.DeleteSessionResponse:
        return self._call(
            self.stub.DeleteSession, pb.DeleteSessionRequest(session=session, force=force)
        )

    def next_batch(self, session: str, k: int = 0) -> pb.NextBatchResponse:
        request = pb.NextBatchRequest(session=session, k=k, annotator=self.annotator)
        return self._call(self.stub.NextBatch, request)

    def submit(
        self, session: str, labels: Sequence[tuple[int, str]], relabel: bool = False
    ) -> pb.SubmitLabelsResponse:
        request = pb.SubmitLabelsRequest(
            session=session,
            labels=[pb.Label(id=i, label=lab) for i, lab in labels],
            request_id=new_request_id(),
            annotator=self.annotator,
            relabel=relabel,
        )
        return self._call(self.stub.SubmitLabels, request)

    def skip(self, session: str, ids: Sequence[int]) -> pb.SubmitLabelsResponse:
        request = pb.SkipRequest(
            session=session, ids=ids, request_id=new_request_id(), annotator=self.annotator
        )
        return self._call(self.stub.Skip, request)

    def undo(self, session: str) -> pb.UndoResponse:
        request = pb.UndoRequest(
            session=session, request_id=new_request_id(), annotator=self.annotator
        )
        return self._call(self.stub.Undo, request)

    def release(self, session: str) -> int:
        request = pb.ReleaseLeaseRequest(session=session, annotator=self.annotator)
        return self._call(self.stub.ReleaseLease, request).released

    def import_labels(
        self,
        session: str,
        labels: Sequence[FileLabel],
        overwrite: bool = False,
    ) -> Imported:
        """Import labels in chunks of IMPORT_CHUNK, one request each; a label without an
        annotator is recorded as this client's annotator's."""
        base = new_request_id()
        written = already = 0
        notes: list[str] = []
        for n, start in enumerate(range(0, len(labels), IMPORT_CHUNK)):
            chunk = labels[start : start + IMPORT_CHUNK]
            request = pb.ImportLabelsRequest(
                session=session,
                labels=[pb.Label(id=x.id, label=x.label, annotator=x.annotator) for x in chunk],
                request_id=f"import-{base}-{n}",
                overwrite=overwrite,
                annotator=self.annotator,
            )
            reply = self._call(self.stub.ImportLabels, request)
            written += reply.accepted
            already += reply.already_labeled
            notes += [reply.note] if reply.note else []
        return Imported(written, already, tuple(notes))

    # successor jobs
    def train_successor(
        self, request: pb.TrainSuccessorRequest, timeout: float
    ) -> pb.TrainSuccessorResponse:
        """Queue a job; not retried (it has no request id: a retry could queue it twice)."""
        return self.stub.TrainSuccessor(request, timeout=timeout)

    def watch_job(self, job_id: str) -> Iterator[pb.JobEvent]:
        """The job's events until it ends (no deadline: a job may train for hours)."""
        return iter(self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id)))

    def list_models(self, session: str = "") -> list[pb.Model]:
        reply = self._call(self.stub.ListModels, pb.ListModelsRequest(session=session))
        return list(reply.models)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SessionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
