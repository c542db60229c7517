"""The Label Studio backend's calls to OrchestratorService (`labelstudio.backend.
Orchestrator`): protos in, the backend's dataclasses out, proxal's errors for failed calls.
Writes carry the request ids the backend derives from Label Studio's annotations, and are
retried with them while the orchestrator is unreachable (SessionClient)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.labelstudio.backend import (
    Guess,
    Predicted,
    SessionInfo,
    SessionSettings,
    Written,
)
from proxal.orchestrator_service.rpc.session_client import SessionClient
from proxal.runtime.server import error_from_rpc

P = ParamSpec("P")
T = TypeVar("T")
TRAIN_TIMEOUT_S = 120.0  # TrainSuccessor reads the session's labels before it answers


def _domain_errors(fn: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "orchestrator") from None

    return wrapper


def _info(s: pb.Session) -> SessionInfo:
    return SessionInfo(
        s.session, s.pool, s.split, tuple(s.classes), s.embedding_version, s.rounds, s.labels
    )


def _written(r: pb.SubmitLabelsResponse) -> Written:
    return Written(r.accepted, r.total_labels, r.replayed, r.already_labeled, r.note)


class _Rpc(SessionClient):
    """SessionClient plus the calls only the backend makes, with its own request ids."""

    def predict(self, request: pb.PredictRequest) -> pb.PredictResponse:
        return self._call(self.stub.Predict, request)

    def lookup(self, request: pb.LookupItemsRequest) -> pb.LookupItemsResponse:
        return self._call(self.stub.LookupItems, request)

    def import_request(self, request: pb.ImportLabelsRequest) -> pb.SubmitLabelsResponse:
        return self._call(self.stub.ImportLabels, request)

    def remove(self, request: pb.RemoveLabelsRequest) -> pb.SubmitLabelsResponse:
        return self._call(self.stub.RemoveLabels, request)


class LsOrchestrator:
    """OrchestratorService at `address` for the Label Studio backend."""

    def __init__(self, address: str, timeout: float = 60.0, retry_seconds: float = 30.0):
        self.rpc = _Rpc(address, "ls", timeout, retry_seconds)

    def connect(self, seconds: float) -> None:
        self.rpc.connect(seconds)

    @_domain_errors
    def find_session(self, name: str) -> SessionInfo | None:
        try:
            return _info(self.rpc.session(name))
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise

    @_domain_errors
    def create_session(
        self, name: str, settings: SessionSettings, classes: Sequence[str]
    ) -> SessionInfo:
        request = pb.CreateSessionRequest(
            session=name,
            pool=settings.pool,
            split=settings.split,
            strategy=settings.strategy,
            batch_size=settings.batch_size,
            embedding_version=settings.embedding_version,
            classes=list(classes),
        )
        return _info(self.rpc.create(request))

    @_domain_errors
    def predict(self, session: str, ids: Sequence[int]) -> Predicted:
        reply = self.rpc.predict(pb.PredictRequest(session=session, ids=ids))
        guesses = [
            Guess(p.suggestion.label, p.suggestion.probability, p.suggestion.score)
            if p.HasField("suggestion")
            else None
            for p in reply.predictions
        ]
        return Predicted(guesses, reply.model_version, reply.note)

    @_domain_errors
    def lookup(self, session: str, texts: Sequence[str]) -> list[int]:
        request = pb.LookupItemsRequest(session=session, texts=texts)
        return list(self.rpc.lookup(request).ids)

    @_domain_errors
    def import_labels(
        self, session: str, labels: Sequence[tuple[int, str, str]], request: str, overwrite: bool
    ) -> Written:
        message = pb.ImportLabelsRequest(
            session=session,
            labels=[pb.Label(id=i, label=lab, annotator=who) for i, lab, who in labels],
            request_id=request,
            overwrite=overwrite,
            annotator="ls",
        )
        return _written(self.rpc.import_request(message))

    @_domain_errors
    def remove_labels(
        self, session: str, ids: Sequence[int], request: str, annotator: str
    ) -> Written:
        message = pb.RemoveLabelsRequest(
            session=session, ids=ids, request_id=request, annotator=annotator
        )
        return _written(self.rpc.remove(message))

    @_domain_errors
    def train(self, session: str) -> str:
        request = pb.TrainSuccessorRequest(session=session)
        return self.rpc.train_successor(request, TRAIN_TIMEOUT_S).job_id

    def close(self) -> None:
        self.rpc.close()
