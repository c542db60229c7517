"""Embedding-store throughput: write, full read and id lookup of one large version.

    .venv/bin/python bench/store.py [--rows 1000000] [--out bench/results/store.json]

Writes a synthetic (rows x 384) float32 version in 50K-row fragments to a local temporary
store, then times reading it whole into a float32 array (next to reading the raw bytes of
its data files, the floor), and looking up 10,000 random ids. Then the existence checks
that run on every request (has_pool, has_version, list_versions, get_version), next to
the old has_pool, which read the pool's whole id column. Prints tables, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from proxal.store import EncoderInfo, Store

DIM, FRAGMENT_ROWS, LOOKUP_IDS, REPEATS, CHECK_REPEATS = 384, 50_000, 10_000, 3, 21


def _median_s(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return sorted(runs)[len(runs) // 2]


def _read_bytes(directory: Path) -> int:
    total = 0
    for path in directory.iterdir():
        total += len(path.read_bytes())
    return total


def _old_has_pool(store: Store, pool: str) -> bool:
    """has_pool as it was until issue 15: it read the pool's whole id column."""
    return store._tables.read(f"pool__{pool}", columns=["id"]) is not None


def _existence(store: Store, version: str) -> dict[str, float]:
    """Median seconds of each existence check, and of list_versions with the old has_pool."""
    times = {
        "has_pool_old_s": _median_s(lambda: _old_has_pool(store, "bench"), CHECK_REPEATS),
        "has_pool_s": _median_s(lambda: store.has_pool("bench"), CHECK_REPEATS),
        "has_version_s": _median_s(lambda: store.has_version("bench", version), CHECK_REPEATS),
        "list_versions_s": _median_s(lambda: store.list_versions("bench"), CHECK_REPEATS),
        "get_version_s": _median_s(lambda: store.get_version("bench", version), CHECK_REPEATS),
    }
    new_has_pool = store.has_pool
    store.has_pool = lambda pool: _old_has_pool(store, pool)  # type: ignore[method-assign]
    try:
        times["list_versions_old_s"] = _median_s(
            lambda: store.list_versions("bench"), CHECK_REPEATS
        )
    finally:
        store.has_pool = new_has_pool  # type: ignore[method-assign]
    return times


def _print_existence(result: dict[str, float | int]) -> None:
    print(f"\nexistence checks at {result['rows']:,} rows (median of {CHECK_REPEATS}, ms)")
    print(f"{'check':<14} {'old':>8} {'new':>8}")
    for name in ("has_pool", "list_versions", "has_version", "get_version"):
        old = result.get(f"{name}_old_s")
        old_ms = f"{1000 * old:>8.2f}" if old is not None else f"{'-':>8}"
        print(f"{name:<14} {old_ms} {1000 * result[f'{name}_s']:>8.2f}")


def run(rows: int, root: Path) -> dict[str, float | int]:
    store = Store(str(root / "store"))
    store.add_pool_rows("bench", "train", ["t"] * rows, [None] * rows)
    info = EncoderInfo(model_id="synthetic", backend="torch", dim=DIM, max_length=16)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with store.begin_embedding("bench", info) as writer:
        for first in range(0, rows, FRAGMENT_ROWS):
            ids = np.arange(first, min(rows, first + FRAGMENT_ROWS))
            writer.write(ids, rng.normal(size=(len(ids), DIM)).astype(np.float32))
        version = writer.commit().version
    write_s = time.perf_counter() - start

    data_dir = root / "store" / "embeddings__bench.lance" / "data"
    data_bytes = _read_bytes(data_dir)
    bytes_s = _median_s(lambda: _read_bytes(data_dir))
    read_s = _median_s(lambda: store.read_embeddings("bench", version))
    wanted = rng.choice(rows, size=min(LOOKUP_IDS, rows), replace=False)
    lookup_s = _median_s(lambda: store.lookup("bench", version, wanted))
    return {
        **_existence(store, version),
        "rows": rows,
        "dim": DIM,
        "data_mb": data_bytes / 1e6,
        "write_s": write_s,
        "read_bytes_s": bytes_s,
        "read_s": read_s,
        "read_mb_per_s": data_bytes / 1e6 / read_s,
        "lookup_ids": len(wanted),
        "lookup_s": lookup_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/store.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="proxal-bench-") as tmp:
        result = run(args.rows, Path(tmp))
    header = ("rows", "MB", "write s", "bytes s", "read s", "lookup s", "RSS MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (9, 7, 8, 8, 7, 9, 7), strict=True)))
    print(
        f"{result['rows']:>9} {result['data_mb']:>7.0f} {result['write_s']:>8.2f} "
        f"{result['read_bytes_s']:>8.3f} {result['read_s']:>7.3f} {result['lookup_s']:>9.3f} "
        f"{result['peak_rss_mb']:>7.0f}"
    )
    _print_existence(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": platform.platform(), "cores": os.cpu_count(), "result": result},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
