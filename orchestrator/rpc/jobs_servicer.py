"""TrainSuccessor, WatchJob and ListModels: the gRPC side of orchestrator/successor/jobs.py.

Requests become a `JobRequest` (0 or empty fields take the defaults; options out of range
are INVALID_ARGUMENT from `SuccessorConfig`/`PlasmConfig`), domain events become JobEvent
messages. `OrchestratorServicer` delegates its three methods here, with its `JobRunner`
(which also answers for the jobs other orchestrators recorded in the session database).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import grpc
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator_service.successor.config import SuccessorConfig
from proxal.orchestrator_service.successor.jobs import (
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobEvent,
    JobRequest,
    JobRunner,
    metrics_summary,
)
from proxal.runtime.errors import InvalidArgumentError

WATCH_POLL_S = 1.0  # how often a watch checks that its client is still there
_STATES = {
    QUEUED: pb.JOB_STATE_QUEUED,
    RUNNING: pb.JOB_STATE_RUNNING,
    SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    FAILED: pb.JOB_STATE_FAILED,
}


def _check_lengths(request: pb.TrainSuccessorRequest) -> None:
    """INVALID_ARGUMENT for a string field too long to be a method, device, split, filter
    or path (so no error message repeats a huge value)."""
    for name, value, limit in (
        ("method", request.method, 32),
        ("device", request.device, 32),
        ("test_split", request.test_split, 64),
        ("plasm.filter", request.plasm.filter, 32),
        ("model", request.model, 4096),
    ):
        if len(value) > limit:
            raise InvalidArgumentError(
                f"{name} is {len(value)} characters long; at most {limit} are allowed"
            )


def job_request(request: pb.TrainSuccessorRequest) -> JobRequest:
    """The domain request; SuccessorConfig and PlasmConfig check every option."""
    from proxal.orchestrator_service.successor.plasm import (
        PlasmConfig,  # loads torch: only once a job is asked for
    )

    _check_lengths(request)
    given: dict[str, Any] = {
        "epochs": request.epochs,
        "batch_size": request.batch_size,
        "max_length": request.max_length,
        "patience": request.patience,
        "device": request.device,
        "time_budget_s": request.time_budget_s,
    }
    config = SuccessorConfig(
        validation_fraction=request.validation_fraction,
        seed=request.seed,
        **{k: v for k, v in given.items() if v},  # 0 / "": the default
    )
    plasm = None
    if request.plasm.enabled:
        plasm = PlasmConfig(
            teacher=dataclasses.replace(
                config,
                method="full",
                validation_fraction=request.plasm.heldout or 0.2,
                validation_metric="accuracy",
            ),
            filter=request.plasm.filter or "uncertainty",
            pool_sample=request.plasm.pool_sample or None,
            seed=request.seed,
        )
    return JobRequest(
        session=request.session,
        method=request.method or "full",
        config=config,
        plasm=plasm,
        test_split=request.test_split or "test",
        onnx=not request.skip_onnx,
        model_path=request.model or None,
    )


def train_successor(
    runner: JobRunner, request: pb.TrainSuccessorRequest
) -> pb.TrainSuccessorResponse:
    job, ahead = runner.submit(job_request(request))
    return pb.TrainSuccessorResponse(
        job_id=job.id,
        state=_STATES[job.last.state],
        queued_ahead=ahead,
        device=job.device,
        model_uri=runner.model_uri(job.data.session, job.id),
    )


def _event(e: JobEvent) -> pb.JobEvent:
    fields = dataclasses.asdict(e)
    fields["state"] = _STATES[e.state]
    return pb.JobEvent(**fields)


def watch_job(
    runner: JobRunner, request: pb.WatchJobRequest, context: grpc.ServicerContext
) -> Iterator[pb.JobEvent]:
    """Every event of the job from its start, then new ones until it ends (or the client
    goes away). A job of another orchestrator (or from before a restart) starts at its
    recorded last event and follows its database record (`JobRunner.get`)."""
    job = runner.get(request.job_id)
    seen = 0
    while context.is_active():
        events = job.wait_events(seen, WATCH_POLL_S)
        seen += len(events)
        yield from (_event(e) for e in events)
        if events and events[-1].state in (SUCCEEDED, FAILED):
            return


def list_models(runner: JobRunner, request: pb.ListModelsRequest) -> pb.ListModelsResponse:
    if request.session:
        runner.store.get_session(request.session)  # NOT_FOUND names an unknown session
    models = []
    for record in runner.list_models(request.session):
        models.append(
            pb.Model(
                session=record.session,
                job_id=record.job_id,
                uri=record.uri,
                files=list(record.files),
                metrics_json=json.dumps(record.metrics),
                **metrics_summary(record),
            )
        )
    return pb.ListModelsResponse(models=models)
