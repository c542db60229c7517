"""Shard-owning proxy replicas at scale: Select latency and each replica's peak memory.

    .venv/bin/python bench/shards.py write   --rows 10000000 [--root /tmp/proxal-shards]
    .venv/bin/python bench/shards.py measure --rows 10000000 [--replicas 4] [--requests 5]
        [--no-failover] [--keep] [--out bench/results/shards_10m.json]
    .venv/bin/python bench/shards.py clean   [--root /tmp/proxal-shards]

``write`` stores a synthetic (rows x 384) float32 version (4 Gaussian classes, 50K-row
fragments, as bench/store.py writes) under --root and the labels it will use. ``measure``
starts --replicas real proxy subprocesses on loopback, replica i with ``--shard i/R`` (each
loads only its part), and the orchestrator's `ShardedSelector` in-process; it then times
Select end to end (least confidence, 2,000 labels, k = 100, a new seed per request so
every replica fits again; the median of --requests after one warm-up that loads the parts)
with the phase split (slowest part's load, fit, score + select; the rest is gRPC and the
merge), and reads each replica's peak RSS (VmHWM in /proc/<pid>/status) against its
part's matrix bytes (rows/R x 384 x 4). Unless --no-failover it then stops the owner of
the last part and times the next Select, in which another replica adopts that part.
``measure`` deletes the data afterwards (even on failure) unless --keep. Run each phase
alone on the machine (timings are not valid alongside other work). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from proxal.orchestrator_service.rpc.clients import TrainingSet, select_request
from proxal.orchestrator_service.rpc.processes import ServiceProcess, start_all, stop_all
from proxal.orchestrator_service.rpc.sharding import ShardedSelection, ShardedSelector
from proxal.store import EncoderInfo, Store
from threadpoolctl import threadpool_info

POOL, DIM, CLASSES, FRAGMENT_ROWS = "shards", 384, 4, 50_000
STRATEGY, K, LABELS = "least_confidence", 100, 2000
HEADROOM_ROWS = 65_536  # the replicas' default spare rows for labelled rows of other parts


def write(root: Path, rows: int) -> None:
    """The version and its labels under `root` (removed again if writing fails)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        store = Store(str(root / "store"))
        rng = np.random.default_rng(0)
        centers = rng.normal(0.0, 0.5, size=(CLASSES, DIM)).astype(np.float32)
        classes = rng.integers(0, CLASSES, size=rows).astype(np.int32)
        store.add_pool_rows(POOL, "train", ["t"] * rows, [None] * rows)
        info = EncoderInfo(model_id="synthetic", backend="none", dim=DIM, max_length=16)
        started = time.perf_counter()
        with store.begin_embedding(POOL, info) as writer:
            for first in range(0, rows, FRAGMENT_ROWS):
                ids = np.arange(first, min(rows, first + FRAGMENT_ROWS))
                noise = rng.standard_normal(size=(len(ids), DIM), dtype=np.float32)
                writer.write(ids, centers[classes[ids]] + noise)
            version = str(writer.commit().version)
        labelled = np.sort(rng.choice(rows, LABELS, replace=False)).astype(np.int64)
        np.savez(root / "labels.npz", ids=labelled, classes=classes[labelled], version=version)
        print(f"wrote {rows:,} x {DIM} in {time.perf_counter() - started:.0f} s to {root}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def peak_rss_bytes(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process, in bytes."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmHWM"].split()[0]) * 1024, int(fields["VmRSS"].split()[0]) * 1024)


def available_bytes() -> int:
    """MemAvailable of this machine."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def phases(result: ShardedSelection, wall_s: float) -> dict[str, float]:
    """The slowest part's stages and the rest of the wall time (gRPC, merge)."""
    slowest = max(result.shards, key=lambda r: r.wall_s)
    return {
        "wall_s": wall_s,
        "load_s": max(r.timings["load_s"] for r in result.shards),
        "fit_s": max(r.timings["fit_s"] for r in result.shards),
        "score_select_s": max(r.timings["score_s"] + r.timings["select_s"] for r in result.shards),
        "rest_s": wall_s - sum(slowest.timings.values()),
    }


def timed(selector: ShardedSelector, training: TrainingSet, version: str, seed: int) -> Any:
    request = select_request(POOL, version, training, STRATEGY, K, seed)
    shard_map = selector.shard_map(fresh=True)
    started = time.perf_counter()
    result = selector.select_parts(request, shard_map)
    return result, time.perf_counter() - started


def measure(root: Path, rows: int, replicas: int, requests: int, failover: bool) -> dict[str, Any]:
    """Latency and memory of `replicas` shard-owning replicas over the written version."""
    saved = np.load(root / "labels.npz")
    version = str(saved["version"])
    training = TrainingSet(saved["ids"], saved["classes"], CLASSES)
    part_bytes = rows // replicas * DIM * 4
    need = int(replicas * (1.1 * part_bytes + 0.45 * 2**30))  # part, headroom, index, Python
    if available_bytes() < need:
        raise SystemExit(
            f"bench/shards.py: {available_bytes() / 2**30:.1f} GiB available, need "
            f"{need / 2**30:.1f} GiB for {replicas} parts of {rows:,} rows; try later"
        )
    store = Store(str(root / "store"), create=False)
    args = ["--workers", "2", "--score-threads", "1", "--cache-versions", "1"]
    processes = [
        ServiceProcess(
            "proxy_service", store.uri, [*args, "--shard", f"{i}/{replicas}"], root / f"p{i}.log"
        )
        for i in range(replicas)
    ]
    out: dict[str, Any] = {"rows": rows, "replicas": replicas, "part_matrix_bytes": part_bytes}
    try:
        start_all(processes)
        with ShardedSelector([p.address for p in processes], timeout=600.0) as selector:
            first, first_wall = timed(selector, training, version, 0)  # loads every part
            out["first_select"] = phases(first, first_wall)
            out["part_load_s"] = [r.timings["load_s"] for r in first.shards]
            runs = [timed(selector, training, version, seed) for seed in range(1, requests + 1)]
            out["runs"] = [phases(result, wall) for result, wall in runs]
            out["median_s"] = statistics.median(wall for _, wall in runs)
            assert all(len(result.ids) == K for result, _ in runs)
            out["memory"] = [
                dict(
                    zip(("peak_rss_bytes", "rss_bytes"), peak_rss_bytes(p.process.pid), strict=True)
                )
                for p in processes
                if p.process is not None
            ]
            if failover:
                processes[-1].stop()
                adopted, wall = timed(selector, training, version, requests + 1)
                out["failover"] = {
                    **phases(adopted, wall),
                    "adopted_by": [r.replica for r in adopted.shards if r.adopted],
                    "same_picks_as_before": None,
                }
                again, wall_again = timed(selector, training, version, requests + 1)
                out["failover"]["next_s"] = wall_again
                out["failover"]["same_picks_as_before"] = bool(
                    np.array_equal(adopted.ids, again.ids)
                )
    finally:
        stop_all(processes)
    return out


def print_report(out: dict[str, Any]) -> None:
    print(
        f"\n{out['rows']:,} x {DIM} float32, {out['replicas']} shard-owning replicas, "
        f"{STRATEGY}, {LABELS} labels, k {K}"
    )
    print(f"{'select':<10} {'wall s':>8} {'load':>7} {'fit':>7} {'score':>7} {'rest':>7}")
    rows = [("first", out["first_select"]), *[(f"#{i}", r) for i, r in enumerate(out["runs"], 1)]]
    if "failover" in out:
        rows.append(("adopted", out["failover"]))
    for name, r in rows:
        print(
            f"{name:<10} {r['wall_s']:>8.3f} {r['load_s']:>7.3f} {r['fit_s']:>7.3f} "
            f"{r['score_select_s']:>7.3f} {r['rest_s']:>7.3f}"
        )
    print(f"median Select end to end: {out['median_s']:.3f} s")
    print("part loads (first Select), s: " + ", ".join(f"{s:.1f}" for s in out["part_load_s"]))
    part = out["part_matrix_bytes"]
    print(f"\n{'replica':<8} {'peak RSS GB':>12} {'part GB':>8} {'ratio':>6}")
    for i, m in enumerate(out["memory"]):
        peak = m["peak_rss_bytes"]
        print(f"{i:<8} {peak / 1e9:>12.2f} {part / 1e9:>8.2f} {peak / part:>6.2f}")
    if "failover" in out:
        f = out["failover"]
        print(
            f"\nlast part's owner stopped: adopted by {f['adopted_by']}, Select {f['wall_s']:.2f} s"
        )
        print(f"then {f['next_s']:.2f} s; same picks: {f['same_picks_as_before']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("write", "measure", "clean"))
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/proxal-shards"))
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--no-failover", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the data after measure")
    parser.add_argument("--out", type=Path, default=Path("bench/results/shards.json"))
    args = parser.parse_args(argv)
    # `timeout` sends SIGTERM: exit through the finally blocks, which stop the replicas.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.phase == "clean":
        shutil.rmtree(args.root, ignore_errors=True)
        return
    if args.phase == "write":
        write(args.root, args.rows)
        return
    try:
        out = measure(args.root, args.rows, args.replicas, args.requests, not args.no_failover)
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    print_report(out)
    blas = [
        {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for info in threadpool_info()
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join(["bench/shards.py", *(argv or sys.argv[1:])]),
        "machine": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "blas": blas,
        "result": out,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
