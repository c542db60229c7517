"""OrchestratorService: a thin gRPC adapter over `orchestrator.sessions.Sessions`."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc

from orchestrator import jobs_servicer
from orchestrator.jobs import JobRunner
from orchestrator.label_files import CSV, JSONL, LABEL_STUDIO, format_labels
from orchestrator.sessions import Deleted, Sessions, SessionStatus, WriteResult
from proxal_runtime.errors import InvalidArgumentError

EXPORT_CHUNK_BYTES = 64 * 1024
_EXPORT_FORMATS = {
    pb.EXPORT_FORMAT_UNSPECIFIED: JSONL,
    pb.EXPORT_FORMAT_JSONL: JSONL,
    pb.EXPORT_FORMAT_CSV: CSV,
    pb.EXPORT_FORMAT_LABEL_STUDIO: LABEL_STUDIO,
}


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
        lease_seconds=state.lease_seconds,
        classifier=state.classifier,
        problem=state.problem,
    )


def _written(result: WriteResult) -> pb.SubmitLabelsResponse:
    return pb.SubmitLabelsResponse(
        accepted=result.accepted,
        total_labels=result.total_labels,
        replayed=result.replayed,
        already_labeled=result.already_labeled,
        note=result.note,
    )


def _deleted(result: Deleted) -> pb.DeleteSessionResponse:
    return pb.DeleteSessionResponse(
        session=result.session,
        labels=result.labels,
        skipped=result.skipped,
        label_events=result.label_events,
        lease_events=result.lease_events,
        rounds=result.rounds,
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
                request.lease_seconds or 600.0,
                request.classifier,
            )
        )

    def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.ServicerContext
    ) -> pb.Session:
        return _session(self.sessions.get(request.session))

    def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.ServicerContext
    ) -> pb.ListSessionsResponse:
        return pb.ListSessionsResponse(
            sessions=[_session(s) for s in self.sessions.list_sessions(request.pool)]
        )

    def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSessionResponse:
        return _deleted(self.sessions.delete(request.session, request.force))

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.SessionStatus:
        s = self.sessions.status(request.session)
        return pb.SessionStatus(
            session=_session(s),
            labels=s.labels,
            skipped=s.skipped,
            leased=s.leased,
            remaining=s.remaining,
            rounds=s.rounds,
            embedding_version=s.record.embedding_version,
            latest_version=s.latest_version,
            estimated_accuracy=s.estimated_accuracy,
            accuracy_note=s.accuracy_note,
            class_counts=[pb.ClassCount(label=c, count=n) for c, n in s.class_counts],
            annotators=s.annotators,
            labeled_classes=s.labeled_classes,
            accuracy_classes=s.accuracy_classes,
        )

    def NextBatch(
        self, request: pb.NextBatchRequest, context: grpc.ServicerContext
    ) -> pb.NextBatchResponse:
        batch = self.sessions.next_batch(request.session, request.k, request.annotator)
        return pb.NextBatchResponse(
            items=[pb.Item(id=i, text=t) for i, t in batch.items],
            strategy=batch.strategy,
            fallback_reason=batch.fallback_reason,
            round=batch.round,
            lease_id=batch.lease_id,
            lease_expires_at=batch.lease_expires_at,
            resumed=batch.resumed,
        )

    def SubmitLabels(
        self, request: pb.SubmitLabelsRequest, context: grpc.ServicerContext
    ) -> pb.SubmitLabelsResponse:
        return _written(
            self.sessions.submit(
                request.session,
                [(x.id, x.label) for x in request.labels],
                request.request_id,
                request.annotator,
                request.relabel,
            )
        )

    def Skip(
        self, request: pb.SkipRequest, context: grpc.ServicerContext
    ) -> pb.SubmitLabelsResponse:
        return _written(
            self.sessions.skip(
                request.session, list(request.ids), request.request_id, request.annotator
            )
        )

    def Undo(self, request: pb.UndoRequest, context: grpc.ServicerContext) -> pb.UndoResponse:
        result = self.sessions.undo(request.session, request.request_id, request.annotator)
        return pb.UndoResponse(
            undone_request_id=result.undone_request_id,
            items=[pb.UndoneItem(id=i, text=t, label=lab) for i, t, lab in result.items],
            lease_id=result.lease_id,
            lease_expires_at=result.lease_expires_at,
            total_labels=result.total_labels,
            replayed=result.replayed,
        )

    def ReleaseLease(
        self, request: pb.ReleaseLeaseRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseLeaseResponse:
        return pb.ReleaseLeaseResponse(
            released=self.sessions.release(request.session, request.annotator)
        )

    def ImportLabels(
        self, request: pb.ImportLabelsRequest, context: grpc.ServicerContext
    ) -> pb.SubmitLabelsResponse:
        return _written(
            self.sessions.import_labels(
                request.session,
                [(x.id, x.label) for x in request.labels],
                request.request_id,
                request.overwrite,
                request.annotator,
                [x.annotator for x in request.labels],
            )
        )

    def ExportLabels(
        self, request: pb.ExportLabelsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ExportChunk]:
        fmt = _EXPORT_FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgumentError(
                f"unknown export format {request.format}; use one of {list(pb.ExportFormat.keys())}"
            )
        data = format_labels(self.sessions.export_rows(request.session), fmt)
        for start in range(0, len(data), EXPORT_CHUNK_BYTES):
            yield pb.ExportChunk(data=data[start : start + EXPORT_CHUNK_BYTES])

    # ---------------------------------------------------------------- successor jobs
    # orchestrator/jobs_servicer.py; one JobRunner per servicer, over the sessions' store.
    def TrainSuccessor(
        self, request: pb.TrainSuccessorRequest, context: grpc.ServicerContext
    ) -> pb.TrainSuccessorResponse:
        return jobs_servicer.train_successor(self._jobs(), request)

    def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.JobEvent]:
        return jobs_servicer.watch_job(self._jobs(), request, context)

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return jobs_servicer.list_models(self._jobs(), request)

    def _jobs(self) -> JobRunner:
        return jobs_servicer.runner_of(self, lambda: self.sessions.store)
