"""`proxal finetune`: a client of the orchestrator's successor jobs, through `Client`.

Submits the job (`Client.train_successor`), follows its events with a progress bar, and
prints what the job trained and where its artifacts are (from `list_models`' metrics). A
job that fails prints its reason and exits 1; a request the orchestrator refuses prints
"proxal: STATUS: message" and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxal.orchestrator_service.cli.label import call_failed, open_client
from proxal.orchestrator_service.rpc.client import Client, JobEvent, Plasm
from proxal.runtime.errors import ProxalError
from tqdm import tqdm


def submit(client: Client, args: argparse.Namespace) -> str:
    """Queue the job of `proxal finetune`'s flags and say where it stands → its id."""
    plasm = (
        Plasm(args.plasm_filter, args.plasm_pool_sample, args.plasm_heldout) if args.plasm else None
    )
    job = client.train_successor(
        args.session,
        args.method,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        validation_fraction=args.validation_fraction,
        patience=args.patience,
        seed=args.seed,
        test_split=args.test_split,
        onnx=not args.no_onnx,
        device=args.device,
        time_budget_s=args.time_budget,
        model=args.model,
        plasm=plasm,
    )
    print(
        f"job {job.id}: {job.state} with {job.queued_ahead} job(s) ahead, on "
        f"{job.device}; artifacts go to {job.model_uri}"
    )
    return job.id


def train_and_watch(args: argparse.Namespace) -> int:
    """Submit, follow, summarise → the exit status (0, or 1 for a failed job; a refused
    request prints its status and exits 2)."""
    try:
        with open_client(args.orchestrator) as client:
            job_id = submit(client, args)
            if args.detach:
                return 0
            last = follow(client, job_id)
            if last.state != "succeeded":
                print(f"proxal: job {job_id} failed: {last.message}", file=sys.stderr)
                return 1
            model = next(m for m in client.list_models(args.session) if m.job_id == job_id)
            print(summary(model.metrics, model.uri))
    except ProxalError as exc:
        return call_failed(exc, args.orchestrator)
    return 0


def _stage(phase: str) -> str:
    """The bar a phase belongs to: "teacher", "successor", "probe", else "training"."""
    return phase.split("/")[0] if "/" in phase else "training"


def follow(client: Client, job_id: str) -> JobEvent:
    """Print the job's messages and a step bar per training stage → its last event."""
    bar: tqdm[Any] | None = None
    last = JobEvent(job_id)
    try:
        for event in client.watch_job(job_id):
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
            elif event.message != last.message and event.state != "queued":
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
