"""`proxal finetune`: a client of the orchestrator's successor jobs.

Submits TrainSuccessor, follows WatchJob with a progress bar, and prints what the job
trained and where its artifacts are (from ListModels' metrics.json). A job that fails
prints its reason and exits 1; a request the orchestrator refuses exits 2 (cli.main).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.cli.label import CONNECT_SECONDS
from proxal.orchestrator_service.rpc.session_client import SessionClient
from tqdm import tqdm

SUBMIT_TIMEOUT_S = 120.0  # TrainSuccessor reads the session's labels before it answers


def successor_request(args: argparse.Namespace) -> pb.TrainSuccessorRequest:
    """The TrainSuccessor request of `proxal finetune`'s flags."""
    return pb.TrainSuccessorRequest(
        session=args.session,
        method=args.method,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        validation_fraction=args.validation_fraction,
        patience=args.patience,
        seed=args.seed,
        test_split=args.test_split,
        skip_onnx=args.no_onnx,
        device=args.device,
        time_budget_s=args.time_budget,
        model=args.model,
        plasm=pb.PlasmOptions(
            enabled=args.plasm,
            filter=args.plasm_filter,
            pool_sample=args.plasm_pool_sample,
            heldout=args.plasm_heldout,
        ),
    )


def train_and_watch(args: argparse.Namespace) -> int:
    """Submit, follow, summarise → the exit status (0, or 1 for a failed job)."""
    with SessionClient(args.orchestrator) as client:
        client.connect(CONNECT_SECONDS)
        reply = client.stub.TrainSuccessor(successor_request(args), timeout=SUBMIT_TIMEOUT_S)
        state = pb.JobState.Name(reply.state).removeprefix("JOB_STATE_").lower()
        print(
            f"job {reply.job_id}: {state} with {reply.queued_ahead} job(s) ahead, on "
            f"{reply.device}; artifacts go to {reply.model_uri}"
        )
        if args.detach:
            return 0
        last = follow(client.stub, reply.job_id)
        if last.state != pb.JOB_STATE_SUCCEEDED:
            print(f"proxal: job {reply.job_id} failed: {last.message}", file=sys.stderr)
            return 1
        models = client.stub.ListModels(pb.ListModelsRequest(session=args.session))
        model = next(m for m in models.models if m.job_id == reply.job_id)
        print(summary(json.loads(model.metrics_json), model.uri))
    return 0


def _stage(phase: str) -> str:
    """The bar a phase belongs to: "teacher", "successor", "probe", else "training"."""
    return phase.split("/")[0] if "/" in phase else "training"


def follow(stub: pb_grpc.OrchestratorServiceStub, job_id: str) -> pb.JobEvent:
    """Print the job's messages and a step bar per training stage → its last event."""
    bar: tqdm[Any] | None = None
    last = pb.JobEvent()
    try:
        for event in stub.WatchJob(pb.WatchJobRequest(job_id=job_id)):
            if event.total_steps and (event.step, event.phase) != (last.step, last.phase):
                if bar is None or _stage(event.phase) != _stage(last.phase):
                    if bar is not None:
                        bar.close()
                    bar = tqdm(total=event.total_steps, desc=_stage(event.phase), unit="step")
                bar.n = event.step
                bar.set_postfix(  # one refresh per message: a log file gets one line each
                    phase=event.phase, epoch=event.epoch, loss=f"{event.loss:.3f}", refresh=False
                )
                bar.refresh()
            elif event.message != last.message and event.state != pb.JOB_STATE_QUEUED:
                if bar is not None and last.step == last.total_steps:  # a stage ended
                    bar.close()
                    bar = None
                tqdm.write(f"{job_id}: {event.message}")
            last = event
    finally:
        if bar is not None:
            bar.close()
    return last


def summary(metrics: dict[str, Any], uri: str) -> str:
    """A few lines for the terminal."""
    lines = [
        f"fine-tuned a {metrics['method']} {metrics['model']} successor on {metrics['labels']} "
        f"labels of session {metrics['session']!r} (pool {metrics['pool']!r}, "
        f"{metrics['labeled_classes']} of {metrics['classes']} classes labelled) in "
        f"{metrics['train_seconds']:.1f} s"
    ]
    plasm = metrics.get("plasm")
    if plasm is not None:
        measured = (
            f"; pseudo-label accuracy vs gold {plasm['pseudo_accuracy_all']:.3f} all, "
            f"{plasm['pseudo_accuracy_kept']:.3f} kept"
            if plasm["pseudo_accuracy_kept"] is not None
            else ""
        )
        lines.append(
            f"PLASM ({plasm['filter']} filter): teacher held-out accuracy "
            f"{plasm['teacher_heldout_accuracy']:.3f} (chance {plasm['chance']:.3f}); kept "
            f"{plasm['kept']} of {plasm['candidates']} pseudo-labels{measured}"
        )
    if metrics["validation_score"] is not None:
        lines.append(
            f"kept epoch {metrics['best_epoch'] + 1} of {len(metrics['epochs'])}: validation "
            f"{metrics['validation_metric']} {metrics['validation_score']:.4f} on "
            f"{metrics['validation_labels']} held-out labels"
            + (" (stopped early)" if metrics["stopped_early"] else "")
        )
    test, left_out = metrics["test"], metrics["test_rows_left_out"]
    if test is None:
        lines.append(
            f"no test rows of the session's classes ({left_out} of other classes left out): "
            "not evaluated"
            if left_out
            else "no gold-labelled test split: not evaluated"
        )
    else:
        lines.append(
            f"test ({test['split']}): accuracy {test['accuracy']:.4f}, macro-F1 "
            f"{test['macro_f1']:.4f} on {test['rows']} rows of the session's "
            f"{metrics['classes']} classes; {left_out} rows of other classes left out"
        )
    lines.append(f"artifacts: {uri} ({', '.join(metrics['files'])})")
    return "\n".join(lines)
