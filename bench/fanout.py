"""Fan-out throughput: one embedding run in-process vs over 1 and 2 worker processes.

    .venv/bin/python bench/fanout.py [--texts 2000]
        [--batch-size 64] [--repeats 2] [--out bench/results/fanout.json]

Ingests the first `--texts` AG News test texts (Banking77 train if the shared datasets are
missing) into a store on a temporary directory and embeds the whole pool (MiniLM-L6, torch
fp32, max_length 128) as:

- "in-process": `embed_pool` with the encoder already loaded, as EmbedPool does today;
- "fan-out N": `fan_out` with N worker subprocesses, each with cores/N torch threads.

Each run is a new version of the same pool; the variants take turns for `--repeats`
rounds and a row reports its best round. Phases: `start_s` (until the first embedded row
is reported: worker start-up, imports, model load), `embed_s` (from then until every row is
written), `commit_s` (the rest). `rows_per_s` is rows / embed_s of the best round;
`wall_rows_per_s` counts the whole call. Prints a table and writes JSON.
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

from threadpoolctl import threadpool_info

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from encoder import load_texts  # noqa: E402  (bench/encoder.py: the same texts)
from proxal.encoder_service.encoders import DEFAULT_MODEL, TORCH, EncoderCache  # noqa: E402
from proxal.encoder_service.fanout import fan_out  # noqa: E402
from proxal.encoder_service.pipeline import Progress, embed_pool  # noqa: E402
from proxal.encoder_service.settings import EncoderSettings  # noqa: E402
from proxal.store import Store  # noqa: E402

POOL = "bench"


def timed(run: Any, rows: int) -> dict[str, float]:
    """Call run(progress_cb) and split its wall time into start, embed and commit."""
    marks: dict[str, float] = {}

    def progress(update: Progress) -> None:
        now = time.perf_counter()
        if update.rows_done > 0:
            marks.setdefault("first", now)
        if update.rows_done >= rows:
            marks.setdefault("written", now)

    began = time.perf_counter()
    run(progress)
    ended = time.perf_counter()
    first, written = marks.get("first", began), marks.get("written", ended)
    return {
        "wall_s": ended - began,
        "start_s": first - began,
        "embed_s": written - first,
        "commit_s": ended - written,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fanout.json")
    args = parser.parse_args()
    source, texts = load_texts(args.texts)
    work = Path(tempfile.mkdtemp(prefix="proxal-fanout-bench-"))
    store = Store(str(work / "store"))
    store.add_pool_rows(POOL, "train", texts, [None] * len(texts))
    settings = EncoderSettings(
        store=store.uri, onnx_cache=work / "onnx", max_embed_workers=max(args.workers)
    )
    encoder = EncoderCache(settings.onnx_cache).get(DEFAULT_MODEL, TORCH, 128)
    variants: dict[str, Any] = {
        "in-process": lambda cb: embed_pool(store, POOL, encoder, args.batch_size, cb),
    }
    for n in args.workers:
        variants[f"fan-out {n}"] = lambda cb, n=n: fan_out(
            store, POOL, encoder, n, args.batch_size, settings, cb
        )
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            rounds[name].append(timed(run, len(texts)))
    rows = []
    for name, results in rounds.items():
        best = min(results, key=lambda r: r["embed_s"])
        rows.append(
            {
                "variant": name,
                **{k: round(v, 2) for k, v in best.items()},
                "rows_per_s": round(len(texts) / best["embed_s"], 1),
                "wall_rows_per_s": round(len(texts) / min(r["wall_s"] for r in results), 1),
            }
        )
    print(f"{len(texts)} texts from {source}, batch {args.batch_size}, {os.cpu_count()} cores")
    print(
        f"{'variant':<12} {'start s':>8} {'embed s':>8} {'commit s':>9} {'rows/s':>8} {'wall/s':>8}"
    )
    for r in rows:
        print(
            f"{r['variant']:<12} {r['start_s']:>8} {r['embed_s']:>8} {r['commit_s']:>9} "
            f"{r['rows_per_s']:>8} {r['wall_rows_per_s']:>8}"
        )
    blas = [
        {k: i.get(k) for k in ("internal_api", "architecture", "num_threads")}
        for i in threadpool_info()
    ]
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line),
        platform.processor(),
    )
    report = {
        "texts": len(texts),
        "source": source,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cores": os.cpu_count(),
        "cpu": cpu,
        "blas": blas,
        "rows": rows,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
