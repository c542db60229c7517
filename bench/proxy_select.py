"""Proxy Select latency (fit + score + select) at the demo's scale and above.

    .venv/bin/python bench/proxy_select.py [--out bench/results/proxy_select.json]

Runs the proxy's domain code in-process on synthetic vectors (d = 384, 77 classes,
least confidence, k = 100), with BLAS limited to 1 thread (what the service does) and to
all cores, side by side in one run. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from proxy_service.cache import LoadedVersion
from proxy_service.classifiers import ClassifierSpec
from proxy_service.selection import ModelCache, TrainingSet, select

CASES = [(10_000, 1_000), (100_000, 1_000), (100_000, 5_000)]  # (pool rows, labels)
DIM, CLASSES, K, REPEATS = 384, 77, 100, 3


def one(n: int, labels: int, blas_threads: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=np.int64)
    version = LoadedVersion("bench", "v1", ids, rng.normal(size=(n, DIM)).astype(np.float32))
    training = TrainingSet(ids[:labels], rng.integers(0, CLASSES, labels).astype(np.int32), CLASSES)
    runs = []
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        for seed in range(REPEATS):  # a new seed each time: no cached fit
            start = time.perf_counter()
            result = select(
                lambda: version,
                ModelCache(1),
                training,
                None,
                "least_confidence",
                K,
                seed,
                ClassifierSpec(),
            )
            runs.append((time.perf_counter() - start, result.timings))
    total, timings = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median run
    return {
        "pool": n,
        "labels": labels,
        "blas_threads": blas_threads,
        "total_s": total,
        "fit_s": timings.fit_s,
        "score_s": timings.score_s,
        "select_s": timings.select_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/proxy_select.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = [one(n, labels, threads) for n, labels in CASES for threads in sorted({1, cores})]
    print(f"{'pool':>8} {'labels':>7} {'BLAS':>5} {'total s':>8} {'fit s':>7} {'score s':>8}")
    for r in rows:
        print(
            f"{r['pool']:>8} {r['labels']:>7} {r['blas_threads']:>5} {r['total_s']:>8.3f} "
            f"{r['fit_s']:>7.3f} {r['score_s']:>8.3f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cores": cores,
                "dim": DIM,
                "classes": CLASSES,
                "k": K,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
