"""Embedding throughput at scale: N real texts at <= max_length tokens through one encoder.

    .venv/bin/python bench/encoder_throughput.py [--texts 100000] [--max-length 64]
        [--precision fp16] [--backend torch] [--batch-size 1024] [--texts-file FILE]
        [--out bench/results/encoder_throughput.json]

The texts are real ones (AG News test from the shared datasets, `--texts-file`, or the
repo's Banking77), repeated in order up to `--texts`. They go through the service's own
path (`encode_bucketed`: length-bucketed batches, tokenisation of the next batch
overlapping inference of this one). After a warm-up batch, it times three phases: the
tokeniser alone over every text, the whole run, and (from those) the model's share. Target
on one H100/H200: >= 10,000 texts/s for MiniLM-L6 fp16 at 64 tokens. Prints a line per
phase and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_TEXTS = REPO.parent / "shared" / "datasets" / "ag_news" / "test.jsonl"
FALLBACK_TEXTS = REPO / "orchestrator" / "demo" / "data" / "banking77" / "train.jsonl"
TARGET_TEXTS_PER_S = 10_000


def load_texts(path: Path | None, n: int) -> tuple[str, list[str]]:
    """(source, `n` texts: the file's texts repeated in order)."""
    source = path or (SHARED_TEXTS if SHARED_TEXTS.exists() else FALLBACK_TEXTS)
    with source.open() as fh:
        base = [json.loads(line)["text"] for line in fh if line.strip()]
    return str(source), [base[i % len(base)] for i in range(n)]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Load the encoder, warm it up, then time tokenisation alone and the whole run."""
    import torch
    from proxal.encoder_service.batching import encode_bucketed
    from proxal.encoder_service.encoders import build_encoder, resolve_precision

    source, texts = load_texts(args.texts_file, args.texts)
    precision = resolve_precision(args.backend, args.precision, args.model)
    with tempfile.TemporaryDirectory(prefix="proxal-throughput-onnx-") as cache:
        encoder = build_encoder(
            args.model, args.backend, args.max_length, Path(cache), precision.precision
        )
        encode_bucketed(encoder, texts[: args.batch_size * 2], args.batch_size)  # warm-up
        tokenizer = encoder._tokenizer  # the encoder's own, as configured
        start = time.perf_counter()
        for i in range(0, len(texts), args.batch_size):
            tokenizer.encode_batch(texts[i : i + args.batch_size])
        tokenize_s = time.perf_counter() - start
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        vectors, truncated = encode_bucketed(encoder, texts, args.batch_size)
        total_s = time.perf_counter() - start
    return {
        "texts": len(texts),
        "source": source,
        "model": args.model,
        "backend": args.backend,
        "precision": precision.precision,
        "precision_reason": precision.reason,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "truncated_texts": truncated,
        "device": str(getattr(encoder, "runs_on", "?")),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "seconds": total_s,
        "texts_per_s": len(texts) / total_s,
        "tokenize_only_s": tokenize_s,
        "tokenize_only_texts_per_s": len(texts) / tokenize_s,
        "finite_unit_vectors": bool(
            np.isfinite(vectors).all() and np.allclose((vectors**2).sum(axis=1), 1.0, atol=1e-2)
        ),
        "target_texts_per_s": TARGET_TEXTS_PER_S,
        "machine": platform.platform(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="fp16", help='"" or "auto": the machine default')
    parser.add_argument("--texts-file", type=Path, default=None)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "encoder_throughput.json"
    )
    args = parser.parse_args()
    report = measure(args)
    print(
        f"{report['texts']} texts ({report['source']}) at <= {report['max_length']} tokens, "
        f"{report['model']} {report['backend']} {report['precision']} on {report['device']} "
        f"({report['gpu'] or 'no GPU'}), batch {report['batch_size']}"
    )
    print(f"  tokenise only : {report['tokenize_only_texts_per_s']:>10,.0f} texts/s")
    print(f"  whole run     : {report['texts_per_s']:>10,.0f} texts/s in {report['seconds']:.2f} s")
    verdict = "meets" if report["texts_per_s"] >= TARGET_TEXTS_PER_S else "MISSES"
    print(f"  {verdict} the {TARGET_TEXTS_PER_S:,} texts/s target (one H100/H200-class GPU)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
