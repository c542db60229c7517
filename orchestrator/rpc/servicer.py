"""OrchestratorService: a thin gRPC adapter over `sessions.live.Sessions`.

It turns protos into the engine's dataclasses and back, and a failed call to the proxy or
the encoder (`grpc.RpcError`) into the error hierarchy, keeping its status code.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.engine.feature_checks import CheckRecord, CheckStatus
from proxal.orchestrator_service.engine.loop import (
    asvp_of,
    class_balanced_of,
    initial_batch_of,
    lineage_of,
    ups_of,
)
from proxal.orchestrator_service.engine.selectors import ClassifierSpec
from proxal.orchestrator_service.engine.stopping import StoppingSignal, unavailable
from proxal.orchestrator_service.engine.ups import UpsSchedule
from proxal.orchestrator_service.rpc import jobs_servicer
from proxal.orchestrator_service.rpc.metrics import IMPORT, LABEL, SKIP, OrchestratorMetrics
from proxal.orchestrator_service.rpc.readiness import orchestrator_check
from proxal.orchestrator_service.rpc.sharding import ReplicaSet
from proxal.orchestrator_service.sessions.label_files import (
    CSV,
    HF,
    JSONL,
    LABEL_STUDIO,
    PARQUET,
)
from proxal.orchestrator_service.sessions.live import Deleted, Sessions, SessionStatus, WriteResult
from proxal.orchestrator_service.sessions.suggest import ItemPredictions, Suggestion
from proxal.orchestrator_service.successor.jobs import JobRunner
from proxal.runtime.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from proxal.runtime.metrics import new_registry
from proxal.runtime.server import (
    RunningServer,
    ServerSettings,
    error_from_rpc,
    serve_forever,
    start_or_exit,
)

if TYPE_CHECKING:
    from proxal.orchestrator_service.engine.asvp import AsvpConfig

EXPORT_CHUNK_BYTES = 64 * 1024
_EXPORT_FORMATS = {
    pb.EXPORT_FORMAT_UNSPECIFIED: JSONL,
    pb.EXPORT_FORMAT_JSONL: JSONL,
    pb.EXPORT_FORMAT_CSV: CSV,
    pb.EXPORT_FORMAT_LABEL_STUDIO: LABEL_STUDIO,
    pb.EXPORT_FORMAT_PARQUET: PARQUET,
    pb.EXPORT_FORMAT_HF_DATASET: HF,
}


# What the proxy answers when it cannot fit a session's models now (Status still answers).
PROXY_ERRORS = (
    NotFoundError,
    FailedPreconditionError,
    UnavailableError,
    DeadlineExceededError,
    ResourceExhaustedError,
)


@contextlib.contextmanager
def _downstream(service: str = "proxy service") -> Iterator[None]:
    """A failed call to another service as the matching domain error."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, service) from exc


def _ups_settings(ups: UpsSchedule | None) -> pb.UpsSettings | None:
    if ups is None:
        return None
    return pb.UpsSettings(
        gamma=ups.gamma,
        temperature=ups.temperature,
        full_rounds=ups.full_rounds,
        full_every=ups.full_every,
    )


def _asvp_settings(asvp: AsvpConfig | None) -> pb.AsvpSettings | None:
    if asvp is None:
        return None
    f = asvp.finetune
    return pb.AsvpSettings(
        every_rounds=asvp.every_rounds,
        growth_factor=asvp.growth_factor,
        threshold=asvp.threshold,
        use_ped=asvp.use_ped,
        finetune_method=f.method,
        finetune_epochs=f.epochs,
        max_length=f.max_length,
        finetune_batch_size=f.batch_size,
        time_budget_s=f.time_budget_s or 0.0,
        keep_checkpoints=asvp.keep_checkpoints,
    )


def ups_schedule(message: pb.UpsSettings) -> UpsSchedule:
    """UpsSettings as a checked schedule (0 or unset: the defaults)."""
    d = UpsSchedule()
    ups = UpsSchedule(
        gamma=message.gamma or d.gamma,
        temperature=message.temperature or d.temperature,
        full_rounds=message.full_rounds or d.full_rounds,
        full_every=message.full_every if message.HasField("full_every") else d.full_every,
    )
    ups.validate()
    return ups


def asvp_config(message: pb.AsvpSettings) -> AsvpConfig:
    """AsvpSettings as a checked AsvpConfig (unset: the defaults); InvalidArgumentError."""
    from proxal.orchestrator_service.engine.asvp import AsvpConfig
    from proxal.orchestrator_service.successor.config import METHODS

    if message.finetune_method and message.finetune_method not in METHODS:
        raise InvalidArgumentError(
            f"asvp finetune_method must be one of {', '.join(METHODS)}, got "
            f"{message.finetune_method[:80]!r}"
        )
    d = AsvpConfig()
    f = d.finetune
    time_budget = message.time_budget_s
    if time_budget < 0 or math.isnan(time_budget):
        raise InvalidArgumentError(f"asvp time_budget_s must be >= 0, got {time_budget}")
    finetune = type(f)(
        **{
            **asdict(f),
            "method": message.finetune_method or f.method,
            "epochs": message.finetune_epochs or f.epochs,
            "max_length": message.max_length or f.max_length,
            "batch_size": message.finetune_batch_size or f.batch_size,
            "time_budget_s": time_budget or None,
            "lora_target_modules": f.lora_target_modules,
        }
    )
    config = AsvpConfig(
        every_rounds=message.every_rounds if message.HasField("every_rounds") else d.every_rounds,
        growth_factor=message.growth_factor,
        threshold=message.threshold if message.HasField("threshold") else d.threshold,
        use_ped=message.use_ped if message.HasField("use_ped") else d.use_ped,
        finetune=finetune,
        keep_checkpoints=message.keep_checkpoints,
    )
    config.validate()
    return config


def _check(check: CheckRecord | None) -> pb.FeatureCheck | None:
    if check is None:
        return None
    return pb.FeatureCheck(**asdict(check))


def _asvp_status(status: CheckStatus | None) -> pb.AsvpStatus | None:
    if status is None:
        return None
    return pb.AsvpStatus(
        enabled=status.enabled,
        running=status.running,
        phase=status.phase,
        last_check=_check(status.last),
        checks=status.checks,
        failed_checks=status.failed,
        next_due=status.next_due,
    )


def _session(state: SessionStatus) -> pb.Session:
    r = state.record
    spec = state.classifier_spec
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
        classifier_c=spec.c,
        classifier_max_iter=spec.max_iter,
        classifier_balanced=spec.balanced,
        ups=_ups_settings(ups_of(r)) if not state.problem else None,
        asvp=_asvp_settings(asvp_of(r)) if not state.problem else None,
        lineage=lineage_of(r),
        initial_batch=initial_batch_of(r),
        class_balanced=class_balanced_of(r),
    )


def _written(result: WriteResult) -> pb.SubmitLabelsResponse:
    return pb.SubmitLabelsResponse(
        accepted=result.accepted,
        total_labels=result.total_labels,
        replayed=result.replayed,
        already_labeled=result.already_labeled,
        note=result.note,
    )


def _suggestion(suggestion: Suggestion) -> pb.Suggestion:
    return pb.Suggestion(
        label=suggestion.label, probability=suggestion.probability, score=suggestion.score
    )


def _predicted(result: ItemPredictions) -> pb.PredictResponse:
    return pb.PredictResponse(
        predictions=[
            pb.Prediction(id=i, suggestion=_suggestion(x))
            for i, x in zip(result.ids, result.suggestions, strict=True)
        ]
        if result.suggestions
        else [pb.Prediction(id=i) for i in result.ids],
        strategy=result.strategy,
        round=result.round,
        embedding_version=result.embedding_version,
        labels=result.labels,
        model_version=result.model_version,
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
    """OrchestratorService over `sessions`; successor jobs run on `jobs` (default: a
    JobRunner over the sessions' store, made on first use). `close()` stops both."""

    def __init__(
        self,
        sessions: Sessions,
        jobs: JobRunner | None = None,
        metrics: OrchestratorMetrics | None = None,
    ):
        self.sessions = sessions
        self.metrics = metrics or OrchestratorMetrics()
        self._job_runner = jobs
        self._jobs_lock = threading.Lock()

    def _acknowledged(self, kind: str, result: WriteResult) -> pb.SubmitLabelsResponse:
        self.metrics.acknowledged_labels(kind, result.accepted, result.replayed)
        return _written(result)

    def close(self) -> None:
        """Drop queued ASVP checks and successor jobs; running ones stop at their next step."""
        self.sessions.close()
        with self._jobs_lock:
            if self._job_runner is not None:
                self._job_runner.close()

    def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.ServicerContext
    ) -> pb.Session:
        spec = ClassifierSpec(
            request.classifier,
            request.classifier_c,
            request.classifier_max_iter,
            request.classifier_balanced,
        )
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
                spec,
                ups=ups_schedule(request.ups) if request.HasField("ups") else None,
                asvp=asvp_config(request.asvp) if request.HasField("asvp") else None,
                initial_batch=request.initial_batch,
                class_balanced=request.class_balanced,
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
        with _downstream():
            s = self.sessions.status(request.session, stopping=False)
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
            asvp=_asvp_status(s.asvp),
            lineage=lineage_of(s.record),
            stopping=[
                pb.StoppingSignal(
                    name=x.name,
                    rule=x.rule,
                    value=x.value,
                    threshold=x.threshold,
                    stop=x.stop,
                    note=x.note,
                )
                for x in ([] if request.skip_stopping else self._stopping(request.session))
            ],
        )

    def _stopping(self, session: str) -> list[StoppingSignal]:
        """The stopping signals; NaN with the reason when the proxy cannot fit the session's
        models now (e.g. its embedding version is gone): Status answers all the same."""
        try:
            with _downstream():
                return self.sessions.stopping_signals(session)
        except PROXY_ERRORS as exc:
            return unavailable(f"the proxy cannot fit the session's models: {exc}")

    def NextBatch(
        self, request: pb.NextBatchRequest, context: grpc.ServicerContext
    ) -> pb.NextBatchResponse:
        with _downstream():
            batch = self.sessions.next_batch(request.session, request.k, request.annotator)
        return pb.NextBatchResponse(
            items=[
                pb.Item(id=i, text=t, suggestion=_suggestion(hint) if hint else None)
                for i, t in batch.items
                for hint in [batch.suggestions.get(i)]
            ],
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
        return self._acknowledged(
            LABEL,
            self.sessions.submit(
                request.session,
                [(x.id, x.label) for x in request.labels],
                request.request_id,
                request.annotator,
                request.relabel,
            ),
        )

    def Skip(
        self, request: pb.SkipRequest, context: grpc.ServicerContext
    ) -> pb.SubmitLabelsResponse:
        return self._acknowledged(
            SKIP,
            self.sessions.skip(
                request.session, list(request.ids), request.request_id, request.annotator
            ),
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
        return self._acknowledged(
            IMPORT,
            self.sessions.import_labels(
                request.session,
                [(x.id, x.label) for x in request.labels],
                request.request_id,
                request.overwrite,
                request.annotator,
                [x.annotator for x in request.labels],
            ),
        )

    def RemoveLabels(
        self, request: pb.RemoveLabelsRequest, context: grpc.ServicerContext
    ) -> pb.SubmitLabelsResponse:
        return _written(
            self.sessions.remove(
                request.session, list(request.ids), request.request_id, request.annotator
            )
        )

    def Predict(
        self, request: pb.PredictRequest, context: grpc.ServicerContext
    ) -> pb.PredictResponse:
        with _downstream():
            result = self.sessions.predict(request.session, list(request.ids))
        return _predicted(result)

    def LookupItems(
        self, request: pb.LookupItemsRequest, context: grpc.ServicerContext
    ) -> pb.LookupItemsResponse:
        return pb.LookupItemsResponse(
            ids=self.sessions.lookup(request.session, list(request.texts))
        )

    def ExportLabels(
        self, request: pb.ExportLabelsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ExportChunk]:
        fmt = _EXPORT_FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgumentError(
                f"unknown export format {request.format}; use one of {list(pb.ExportFormat.keys())}"
            )
        data = self.sessions.export_labels(request.session, fmt)
        for start in range(0, len(data), EXPORT_CHUNK_BYTES):
            yield pb.ExportChunk(data=data[start : start + EXPORT_CHUNK_BYTES])

    # ---------------------------------------------------------------- successor jobs
    # orchestrator/rpc/jobs_servicer.py, on this servicer's JobRunner.
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
        with self._jobs_lock:
            if self._job_runner is None:
                self._job_runner = JobRunner(self.sessions.store)
            return self._job_runner


def start(
    settings: ServerSettings, sessions: Sessions, replicas: ReplicaSet
) -> tuple[RunningServer, OrchestratorServicer]:
    """Serve OrchestratorService over `sessions`, with its metrics; health turns SERVING
    once the store, its database and a proxy replica of `replicas` answer. Exits with a
    message when an address cannot be bound."""
    registry = new_registry()
    servicer = OrchestratorServicer(sessions, metrics=OrchestratorMetrics(registry, sessions.store))
    name = pb.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
    running = start_or_exit(
        settings,
        lambda s: pb_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
        [name],
        readiness=orchestrator_check(sessions.store, replicas),
        registry=registry,
    )
    return running, servicer


def serve(settings: ServerSettings, sessions: Sessions, replicas: ReplicaSet) -> None:
    """Serve OrchestratorService (`start`) until SIGTERM/SIGINT, then close the servicer:
    queued ASVP checks and successor jobs are dropped, running ones are abandoned at their
    next step."""
    running, servicer = start(settings, sessions, replicas)
    try:
        serve_forever(running)
    finally:
        servicer.close()
