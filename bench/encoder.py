"""Encoder throughput and peak memory per backend and precision, side by side in one run.

    .venv/bin/python bench/encoder.py [--texts 2000] [--batch-size 64]
        [--out bench/results/encoder.json]

Embeds a fixed set of real texts (the first `--texts` of AG News test, 13-136 words;
Banking77 train if the shared datasets are missing) the way EmbedPool does (length-bucketed
batches, max_length 128). Every variant runs in a fresh subprocess, so its peak RSS
(ru_maxrss) is its own: native memory included, which tracemalloc cannot see. ONNX exports
and int8 quantisations are built first, in their own subprocess, so no variant pays for
them. CPU variants hide CUDA; the CUDA variants run only when a GPU is available.
The variants take turns for `--repeats` rounds (a fresh process each time), so a burst of
load on a shared machine hits them alike; a row reports its best round's throughput and
its highest peak RSS. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_TEXTS = REPO.parent / "shared" / "datasets" / "ag_news" / "test.jsonl"
FALLBACK_TEXTS = REPO / "orchestrator" / "demo" / "data" / "banking77" / "train.jsonl"
MAX_LENGTH = 128
BASELINE = "torch fp32"


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    backend: str
    precision: str
    cuda: bool = False


VARIANTS = [
    Variant(BASELINE, "minilm-l6", "torch", "fp32"),
    Variant("onnx fp32", "minilm-l6", "onnx", "fp32"),
    Variant("onnx int8", "minilm-l6", "onnx", "int8"),
    Variant("minilm-l3 onnx fp32", "minilm-l3", "onnx", "fp32"),
    Variant("minilm-l3 onnx int8", "minilm-l3", "onnx", "int8"),
    Variant("torch fp16 (cuda)", "minilm-l6", "torch", "fp16", cuda=True),
    Variant("onnx fp32 (cuda)", "minilm-l6", "onnx", "fp32", cuda=True),
]


def load_texts(n: int) -> tuple[str, list[str]]:
    """(source file, its first `n` texts)."""
    source = SHARED_TEXTS if SHARED_TEXTS.exists() else FALLBACK_TEXTS
    texts: list[str] = []
    with source.open() as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            if len(texts) == n:
                break
    return str(source), texts


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    """Load one encoder and time it on the texts; runs in its own process."""
    from proxal.encoder_service.encoders import build_encoder
    from proxal.encoder_service.pipeline import encode_bucketed

    _, texts = load_texts(args.texts)
    imported_mb = rss_mb()
    start = time.perf_counter()
    encoder = build_encoder(
        variant.model, variant.backend, MAX_LENGTH, args.onnx_cache, variant.precision
    )
    load_s = time.perf_counter() - start
    encoder.encode(texts[: args.batch_size])  # warm-up: first-call allocations, kernels
    start = time.perf_counter()
    encode_bucketed(encoder, texts, args.batch_size)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "texts_per_s": len(texts) / seconds,
        "load_s": load_s,
        "peak_rss_mb": peak_mb,
        "rss_after_imports_mb": imported_mb,
        "model_rss_mb": peak_mb - imported_mb,
        "device": str(getattr(encoder, "runs_on", "?")),
    }


def prepare(args: argparse.Namespace) -> None:
    """Build every ONNX export and int8 graph the variants need (not timed)."""
    from proxal.encoder_service.encoders import MODELS, onnx_model_path

    for variant in VARIANTS:
        if variant.backend == "onnx":
            onnx_model_path(MODELS[variant.model], args.onnx_cache, variant.precision)


def run_child(args: argparse.Namespace, role: str, cuda: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, __file__, "--role", role, "--texts", str(args.texts)]
    command += ["--batch-size", str(args.batch_size), "--onnx-cache", str(args.onnx_cache)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summarize(variant: Variant, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: the best round's throughput, the highest peak RSS, every round."""
    row: dict[str, Any] = asdict(variant)
    if not runs:
        return row | {"skipped": "no CUDA GPU on this machine"}
    best = max(runs, key=lambda run: run["texts_per_s"])
    row |= best | {key: max(run[key] for run in runs) for key in ("peak_rss_mb", "model_rss_mb")}
    row["rounds_texts_per_s"] = [run["texts_per_s"] for run in runs]
    return row


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "encoder.json")
    parser.add_argument("--onnx-cache", type=Path, default=None)
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role != "main":
        if args.role == "prepare":
            prepare(args)
            print("{}")
        else:
            variant = next(v for v in VARIANTS if v.name == args.role)
            print(json.dumps(worker(variant, args)))
        return

    with tempfile.TemporaryDirectory(prefix="proxal-bench-onnx-") as tmp:
        args.onnx_cache = args.onnx_cache or Path(tmp)
        source, texts = load_texts(args.texts)
        words = [len(t.split()) for t in texts]
        print(f"{len(texts)} texts from {source} ({min(words)}-{max(words)} words)")
        run_child(args, "prepare", cuda=False)
        has_cuda = cuda_available()
        runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in VARIANTS}
        for round_ in range(args.repeats):
            for variant in VARIANTS:
                if has_cuda or not variant.cuda:
                    runs[variant.name].append(run_child(args, variant.name, variant.cuda))
                    print(f"  round {round_ + 1}: {variant.name}", file=sys.stderr)
        rows = [summarize(variant, runs[variant.name]) for variant in VARIANTS]

    base = next(r for r in rows if r["name"] == BASELINE)
    header = f"{'variant':<22}{'device':<22}{'texts/s':>9}{'x torch':>9}"
    header += f"{'peak MiB':>10}{'model MiB':>11}"
    print(header)
    print("-" * len(header))
    for row in rows:
        if "skipped" in row:
            print(f"{row['name']:<22}skipped: {row['skipped']}")
            continue
        row["speedup_vs_torch_fp32"] = row["texts_per_s"] / base["texts_per_s"]
        row["rss_vs_torch_fp32"] = row["peak_rss_mb"] / base["peak_rss_mb"]
        print(
            f"{row['name']:<22}{row['device']:<22}{row['texts_per_s']:>9.1f}"
            f"{row['speedup_vs_torch_fp32']:>8.2f}x{row['peak_rss_mb']:>10.0f}{row['model_rss_mb']:>11.0f}"
        )
    report = {
        "texts": len(texts),
        "source": source,
        "batch_size": args.batch_size,
        "max_length": MAX_LENGTH,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
