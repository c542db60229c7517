"""OrchestratorService: a thin gRPC adapter over `orchestrator.sessions.Sessions`."""

from __future__ import annotations

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc

from orchestrator.sessions import Sessions, SessionStatus


def _session(state: SessionStatus) -> pb.Session:
    r = state.record
    return pb.Session(
        session=r.session,
        pool=r.pool,
        embedding_version=r.embedding_version,
        strategy=r.strategy,
        batch_size=r.batch_size,
        seed=r.seed,
        split=r.split,
        labels=state.labels,
        rounds=state.rounds,
        classes=state.classes,
        created_at=r.created_at,
    )


class OrchestratorServicer(pb_grpc.OrchestratorServiceServicer):
    def __init__(self, sessions: Sessions):
        self.sessions = sessions

    def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.ServicerContext
    ) -> pb.Session:
        return _session(
            self.sessions.create(
                request.session,
                request.pool,
                request.embedding_version,
                request.strategy,
                request.batch_size or 10,
                request.seed,
                request.split or "train",
                list(request.classes),
            )
        )

    def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.ServicerContext
    ) -> pb.Session:
        return _session(self.sessions.status(request.session))

    def NextBatch(
        self, request: pb.NextBatchRequest, context: grpc.ServicerContext
    ) -> pb.NextBatchResponse:
        batch = self.sessions.next_batch(request.session, request.k)
        return pb.NextBatchResponse(
            items=[pb.Item(id=i, text=t) for i, t in batch.items],
            strategy=batch.strategy,
            fallback_reason=batch.fallback_reason,
            round=batch.round,
        )

    def SubmitLabels(
        self, request: pb.SubmitLabelsRequest, context: grpc.ServicerContext
    ) -> pb.SubmitLabelsResponse:
        accepted, total = self.sessions.submit(
            request.session, [(x.id, x.label) for x in request.labels]
        )
        return pb.SubmitLabelsResponse(accepted=accepted, total_labels=total)
