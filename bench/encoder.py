"""Encoder throughput, agreement and peak memory per backend and precision, in one run.

    .venv/bin/python bench/encoder.py [--texts 1000] [--batch-size 64] [--repeats 2]
        [--only NAME,NAME] [--texts-file FILE] [--out bench/results/encoder.json]

Embeds a fixed set of real texts (the first `--texts` of AG News test, 13-136 words;
Banking77 train if the shared datasets are missing) the way EmbedPool does (length-bucketed
batches, max_length 128). Every variant runs in a fresh subprocess, so its peak RSS
(ru_maxrss) is its own: native memory included, which tracemalloc cannot see. ONNX exports
and int8 quantisations are built first, in their own subprocess, so no variant pays for
them. CPU variants hide CUDA; the CUDA variants run only when a GPU is available (ORT
CUDA only when onnxruntime has its CUDA provider). Each row's agreement is the mean (and
minimum) cosine of its vectors against its model's fp32 CPU vectors (torch fp32 for
MiniLM-L6, onnx fp32 for MiniLM-L3, a different model), text by text. "torch bf16" on a CPU
without AMX or AVX-512 BF16 (which the service refuses) is forced here and marked
"emulated": its agreement is what a native bf16 CPU gives, its speed is not.
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

import numpy as np

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
    Variant("torch bf16 autocast", "minilm-l6", "torch", "bf16"),
    Variant("onnx fp32", "minilm-l6", "onnx", "fp32"),
    Variant("onnx int8", "minilm-l6", "onnx", "int8"),
    Variant("minilm-l3 onnx fp32", "minilm-l3", "onnx", "fp32"),
    Variant("minilm-l3 onnx int8", "minilm-l3", "onnx", "int8"),
    Variant("torch fp32 (cuda)", "minilm-l6", "torch", "fp32", cuda=True),
    Variant("torch fp16 (cuda)", "minilm-l6", "torch", "fp16", cuda=True),
    Variant("torch bf16 (cuda)", "minilm-l6", "torch", "bf16", cuda=True),
    Variant("onnx fp32 (cuda)", "minilm-l6", "onnx", "fp32", cuda=True),
]
REFERENCES = {"minilm-l6": BASELINE, "minilm-l3": "minilm-l3 onnx fp32"}
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def load_texts(n: int, path: Path | None = None) -> tuple[str, list[str]]:
    """(source file, its first `n` texts): `path`, else AG News, else Banking77."""
    source = path or (SHARED_TEXTS if SHARED_TEXTS.exists() else FALLBACK_TEXTS)
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


def force_cpu_bf16() -> bool:
    """Let bf16 run on this CPU even without native bf16; True when it is emulated."""
    from proxal.encoder_service import encoders

    cpu = encoders.host_cpu()
    if cpu.bf16_flags:
        return False
    forced = encoders.CpuInfo(cpu.model, cpu.flags | {"avx512_bf16"})
    encoders.host_cpu = lambda: forced  # a bench-only override
    return True


def worker(variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    """Load one encoder, time it on the texts and save its vectors; runs in its own process."""
    from proxal.encoder_service.batching import encode_bucketed
    from proxal.encoder_service.encoders import build_encoder

    _, texts = load_texts(args.texts, args.texts_file)
    cpu_bf16 = variant.precision == "bf16" and not variant.cuda
    emulated = force_cpu_bf16() if cpu_bf16 else False
    imported_mb = rss_mb()
    start = time.perf_counter()
    encoder = build_encoder(
        variant.model, variant.backend, MAX_LENGTH, args.onnx_cache, variant.precision
    )
    load_s = time.perf_counter() - start
    encoder.encode(texts[: args.batch_size])  # warm-up: first-call allocations, kernels
    start = time.perf_counter()
    vectors, _ = encode_bucketed(encoder, texts, args.batch_size)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    np.save(vectors_path(args.vectors_dir, variant.name), vectors)
    return {
        "emulated": emulated,
        "texts_per_s": len(texts) / seconds,
        "load_s": load_s,
        "peak_rss_mb": peak_mb,
        "rss_after_imports_mb": imported_mb,
        "model_rss_mb": peak_mb - imported_mb,
        "device": str(getattr(encoder, "runs_on", "?")),
    }


def selected(only: str) -> list[Variant]:
    """The variants `--only` names (all when empty), torch fp32 always among them."""
    names = {BASELINE, *filter(None, only.split(","))} if only else None
    variants = [v for v in VARIANTS if names is None or v.name in names]
    if names is not None and len(variants) != len(names):
        raise ValueError(f"--only names unknown variants; choose from {[v.name for v in VARIANTS]}")
    return variants


def prepare(args: argparse.Namespace) -> None:
    """Build every ONNX export and int8 graph the selected variants need (not timed)."""
    from proxal.encoder_service.encoders import MODELS, onnx_model_path

    for variant in selected(args.only):
        if variant.backend == "onnx":
            onnx_model_path(MODELS[variant.model], args.onnx_cache, variant.precision)


def vectors_path(directory: Path, name: str) -> Path:
    return directory / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}.npy"


def run_child(args: argparse.Namespace, role: str, cuda: bool) -> dict[str, Any]:
    path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, __file__, "--role", role, "--texts", str(args.texts)]
    command += ["--batch-size", str(args.batch_size), "--onnx-cache", str(args.onnx_cache)]
    command += ["--vectors-dir", str(args.vectors_dir), "--only", args.only]
    if args.texts_file is not None:
        command += ["--texts-file", str(args.texts_file)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summarize(variant: Variant, runs: list[dict[str, Any]], skipped: str) -> dict[str, Any]:
    """One table row: the best round's throughput, the highest peak RSS, every round."""
    row: dict[str, Any] = asdict(variant)
    if not runs:
        return row | {"skipped": skipped}
    best = max(runs, key=lambda run: run["texts_per_s"])
    row |= best | {key: max(run[key] for run in runs) for key in ("peak_rss_mb", "model_rss_mb")}
    row["rounds_texts_per_s"] = [run["texts_per_s"] for run in runs]
    return row


def agreement(rows: list[dict[str, Any]], directory: Path) -> None:
    """Add each row's mean and minimum cosine, text by text, against the fp32 CPU row of
    its model (torch fp32 for MiniLM-L6; MiniLM-L3's own onnx fp32)."""
    names = {row["name"] for row in rows if "skipped" not in row}
    for row in rows:
        reference = REFERENCES[row["model"]]
        if "skipped" in row or reference not in names:
            continue
        vectors = np.load(vectors_path(directory, row["name"]))
        cosines = (vectors * np.load(vectors_path(directory, reference))).sum(axis=1)
        row["cosine_reference"] = reference
        row["mean_cosine_vs_fp32"] = float(cosines.mean())
        row["min_cosine_vs_fp32"] = float(cosines.min())


def why_skipped(variant: Variant) -> str:
    """Why `variant` cannot run on this machine ("" when it can)."""
    import onnxruntime
    import torch

    if variant.cuda and not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    providers = onnxruntime.get_available_providers()
    if variant.cuda and variant.backend == "onnx" and "CUDAExecutionProvider" not in providers:
        return f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider here"
    return ""


def hardware() -> dict[str, Any]:
    """The CPU (model, vector flags, native bf16), BLAS, torch threads and GPU of the run."""
    import torch
    from proxal.encoder_service.encoders import host_cpu
    from threadpoolctl import threadpool_info

    cpu = host_cpu()
    return {
        "cpu_model": cpu.model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in cpu.flags],
        "cpu_native_bf16": cpu.bf16_flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "blas": [
            {k: pool.get(k) for k in ("internal_api", "architecture", "num_threads", "version")}
            for pool in threadpool_info()
        ],
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "machine": platform.platform(),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the rows side by side, adding each one's ratios to torch fp32."""
    base, nan = next(r for r in rows if r["name"] == BASELINE), float("nan")
    header = f"{'variant':<22}{'device':<30}{'texts/s':>9}{'x torch':>9}"
    header += f"{'cos mean':>10}{'cos min':>9}{'peak MiB':>10}{'model MiB':>11}"
    print(header)
    print("-" * len(header))
    for row in rows:
        if "skipped" in row:
            print(f"{row['name']:<22}skipped: {row['skipped']}")
            continue
        row["speedup_vs_torch_fp32"] = row["texts_per_s"] / base["texts_per_s"]
        row["rss_vs_torch_fp32"] = row["peak_rss_mb"] / base["peak_rss_mb"]
        device = row["device"] + (" emulated" if row["emulated"] else "")
        print(
            f"{row['name']:<22}{device:<30}{row['texts_per_s']:>9.1f}"
            f"{row['speedup_vs_torch_fp32']:>8.2f}x{row.get('mean_cosine_vs_fp32', nan):>10.5f}"
            f"{row.get('min_cosine_vs_fp32', nan):>9.5f}{row['peak_rss_mb']:>10.0f}"
            f"{row['model_rss_mb']:>11.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "encoder.json")
    parser.add_argument("--onnx-cache", type=Path, default=None)
    parser.add_argument(
        "--only", default="", help="comma-separated variant names to run (torch fp32 always runs)"
    )
    parser.add_argument("--texts-file", type=Path, default=None, help="a JSONL file of texts")
    parser.add_argument("--vectors-dir", type=Path, default=None, help=argparse.SUPPRESS)
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

    try:
        variants = selected(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="proxal-bench-onnx-") as tmp:
        args.onnx_cache = args.onnx_cache or Path(tmp)
        args.vectors_dir = Path(tmp)
        source, texts = load_texts(args.texts, args.texts_file)
        words = [len(t.split()) for t in texts]
        print(f"{len(texts)} texts from {source} ({min(words)}-{max(words)} words)")
        run_child(args, "prepare", cuda=False)
        skipped = {v.name: why_skipped(v) for v in variants}
        runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
        for round_ in range(args.repeats):
            for variant in variants:
                if not skipped[variant.name]:
                    runs[variant.name].append(run_child(args, variant.name, variant.cuda))
                    print(f"  round {round_ + 1}: {variant.name}", file=sys.stderr)
        rows = [summarize(v, runs[v.name], skipped[v.name]) for v in variants]
        agreement(rows, args.vectors_dir)

    print_table(rows)
    report = {
        "texts": len(texts),
        "source": source,
        "batch_size": args.batch_size,
        "max_length": MAX_LENGTH,
        "repeats": args.repeats,
        "hardware": hardware(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
