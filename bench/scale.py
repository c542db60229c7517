"""Select latency and throughput versus proxy replica count, and a model of the latency.

    .venv/bin/python bench/scale.py [--rows 100000 1000000] [--replicas 1 2 3 4]
        [--requests 16] [--clients 4] [--s3] [--quick] [--out bench/results/scale.json]

For each pool size n (synthetic Gaussian class clusters, n x 384 float32, written to a
local-disk store, or with ``--s3`` to a local moto S3 server) and each replica count r,
against r real proxy replica processes on loopback:

- latency: one Select of the whole pool sharded over the r replicas (`ShardedSelector`,
  r id-range shards, merged top k), repeated ``--requests`` times one after another; the
  median wall time, and the slowest shard's fit and scoring times. Every request uses a new
  seed, so every replica fits its proxy again, as in a new round (logistic regression,
  ``--labels`` labels, 4 classes, least confidence, k = 100);
- throughput: ``--requests`` unsharded whole-pool Selects sent by ``--clients`` threads
  through one `ProxyClient` whose target lists the r replicas (round-robin): requests/s.

Each replica is one core's worth of work: one gRPC worker, one scoring thread and one BLAS
thread (``--workers 1 --score-threads 1``), like a pod with a 1-CPU limit; it loads the
whole version once (untimed warm-up) and keeps it in memory.

**The model.** Scoring splits across replicas; the rest does not:

    t(n, r) ~= t0 + c * n / r_eff,    r_eff = min(r, cores)

t0 is what every request pays whatever the pool: the fit (each replica fits the same
model on the labels, so it does not shrink with r), gRPC, the merge. c is the scoring
cost per row on one core (probabilities, score, top k of a shard). Replicas beyond the
cores share them, so r_eff stops at the core count. t0 and c are fitted by least squares
on the measurements at the smallest ``--rows`` (two distinct n / r_eff are needed: r = 1
and r >= 2), then the model predicts every larger size, and the bench reports its error
against the measurement there. Work per request that grows with n but is not split (each
replica still builds an n-long mask of the labeled rows) shows up as that error; when
there are two sizes or more a second fit, t0 + a * n + c * n / r_eff on every point,
estimates that serial per-row cost a.

**This machine has 2 cores**: throughput and latency improve from 1 to 2 replicas and then
saturate; 3 and 4 replicas only share the same 2 cores (and add contention: every replica
fits the proxy again). The numbers beyond 2 replicas say nothing about a machine with more
cores except through the model.

Prints a table and writes JSON. ``--quick`` shrinks every size (a smoke test in seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from proxal.orchestrator_service.rpc.clients import ProxyClient, TrainingSet
from proxal.orchestrator_service.rpc.processes import ServiceProcess, start_all, stop_all
from proxal.orchestrator_service.rpc.sharding import ShardedSelector, split_range
from proxal.store import EncoderInfo, Store
from proxal.store.local_s3 import moto_s3

POOL_PREFIX = "scale"
CLASSES, FRAGMENT_ROWS, STRATEGY, K = 4, 50_000, "least_confidence", 100
BUCKET = "proxal-bench"
SATURATION_NOTE = (
    "a replica is one core's worth of work (1 gRPC worker, 1 scoring thread); on a machine "
    "with {cores} cores scoring saturates at {cores} replicas: more replicas share the same "
    "cores (and each fits the proxy again), so r_eff = min(r, cores)"
)


@dataclass(frozen=True)
class Sizes:
    rows: tuple[int, ...] = (100_000, 1_000_000)
    replicas: tuple[int, ...] = (1, 2, 3, 4)
    dim: int = 384
    labels: int = 2000
    requests: int = 16
    clients: int = 4


QUICK = Sizes(rows=(3000, 12_000), replicas=(1, 2), dim=32, labels=200, requests=4, clients=2)


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def local_store(root: Path, s3: bool) -> Iterator[tuple[Store, list[str]]]:
    """(store, the services' store flags): a directory under root, or a moto S3 bucket."""
    if not s3:
        yield Store(str(root / "store")), []
        return
    with moto_s3(BUCKET) as server:
        yield Store(f"s3://{BUCKET}/scale", storage_options=server.options), server.store_flags()


def add_pool(store: Store, pool: str, rows: int, dim: int, seed: int) -> tuple[str, np.ndarray]:
    """A version of `rows` class-clustered vectors (rows, dim); (version, classes (rows,))."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 0.5, size=(CLASSES, dim))
    classes = rng.integers(0, CLASSES, size=rows)
    store.add_pool_rows(pool, "train", ["t"] * rows, [None] * rows)
    info = EncoderInfo(model_id="synthetic", backend="none", dim=dim, max_length=16)
    with store.begin_embedding(pool, info) as writer:
        for first in range(0, rows, FRAGMENT_ROWS):
            ids = np.arange(first, min(rows, first + FRAGMENT_ROWS))
            noise = rng.normal(size=(len(ids), dim))
            writer.write(ids, (centers[classes[ids]] + noise).astype(np.float32))
        version = str(writer.commit().version)
    return version, classes


def start_replicas(store: Store, flags: list[str], n: int, log_dir: Path) -> list[ServiceProcess]:
    args = ["--workers", "1", "--score-threads", "1", "--cache-versions", "1", *flags]
    return start_all(
        [
            ServiceProcess("proxy_service", store.uri, args, log_dir / f"proxy{i}.log")
            for i in range(n)
        ]
    )


def measure(
    addresses: list[str],
    pool: str,
    version: str,
    rows: int,
    training: TrainingSet,
    sizes: Sizes,
) -> dict[str, Any]:
    """Latency of sharded Selects and throughput of concurrent unsharded ones (module doc)."""
    r = len(addresses)
    shards = split_range(0, rows, r)
    latencies, fits, scores = [], [], []
    with ShardedSelector(addresses, timeout=600.0) as selector:
        selector.select_shards(pool, version, training, STRATEGY, K, 0, shards)  # load + warm up
        for seed in range(1, sizes.requests + 1):
            start = time.perf_counter()
            result = selector.select_shards(pool, version, training, STRATEGY, K, seed, shards)
            latencies.append(time.perf_counter() - start)
            fits.append(max(s.timings["fit_s"] for s in result.shards))
            scores.append(max(s.timings["score_s"] + s.timings["select_s"] for s in result.shards))
            assert result.retries == 0 and len(result.ids) == K
    client = ProxyClient(",".join(addresses))
    try:
        seeds = range(1000, 1000 + sizes.requests)

        def one(seed: int) -> float:
            began = time.perf_counter()
            client.select(pool, version, training, STRATEGY, K, seed)
            return time.perf_counter() - began

        start = time.perf_counter()
        with ThreadPoolExecutor(sizes.clients) as threads:
            waits = list(threads.map(one, seeds))
        wall = time.perf_counter() - start
    finally:
        client.close()
    ordered = sorted(latencies)
    return {
        "rows": rows,
        "replicas": r,
        "latency_s": statistics.median(latencies),
        "latency_p90_s": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "latency_min_s": ordered[0],
        "fit_s": statistics.median(fits),
        "score_s": statistics.median(scores),
        "throughput_rps": sizes.requests / wall,
        "throughput_latency_s": statistics.mean(waits),
    }


def fit_model(results: list[dict[str, Any]], n_cores: int) -> dict[str, Any]:
    """t0 and c of t = t0 + c * n / r_eff at the smallest size; its error at larger ones."""
    fit_rows = min(r["rows"] for r in results)
    at_fit = [r for r in results if r["rows"] == fit_rows]
    x = np.array([r["rows"] / min(r["replicas"], n_cores) for r in at_fit], dtype=float)
    y = np.array([r["latency_s"] for r in at_fit], dtype=float)
    model: dict[str, Any] = {
        "formula": "t(n, r) = t0 + c * n / min(r, cores)",
        "cores": n_cores,
        "fitted_at_rows": fit_rows,
    }
    if len(set(x.tolist())) < 2:
        model["error"] = "need r = 1 and r >= 2 at the smallest size to fit t0 and c"
        return model
    (t0, c), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(x), x]), y, rcond=None)
    model.update(t0_s=float(t0), c_s_per_row=float(c), c_us_per_million_rows=float(c) * 1e6)
    checks = []
    for r in results:
        predicted = t0 + c * r["rows"] / min(r["replicas"], n_cores)
        checks.append(
            {
                "rows": r["rows"],
                "replicas": r["replicas"],
                "measured_s": r["latency_s"],
                "predicted_s": float(predicted),
                "error": float((predicted - r["latency_s"]) / r["latency_s"]),
                "fitted_here": r["rows"] == fit_rows,
            }
        )
    model["checks"] = checks
    held_out = [abs(ch["error"]) for ch in checks if not ch["fitted_here"]]
    if held_out:
        model["max_abs_error_held_out"] = max(held_out)
    sizes = {r["rows"] for r in results}
    if len(sizes) >= 2:  # the serial per-row term, from every point
        n = np.array([r["rows"] for r in results], dtype=float)
        xs = np.array([r["rows"] / min(r["replicas"], n_cores) for r in results], dtype=float)
        ys = np.array([r["latency_s"] for r in results], dtype=float)
        design = np.column_stack([np.ones_like(n), n, xs])
        coef, _, rank, _ = np.linalg.lstsq(design, ys, rcond=None)
        if rank == 3:
            model["with_serial_term"] = {
                "formula": "t(n, r) = t0 + a * n + c * n / min(r, cores), every point",
                "t0_s": float(coef[0]),
                "a_s_per_row": float(coef[1]),
                "c_s_per_row": float(coef[2]),
            }
    return model


def print_report(results: list[dict[str, Any]], model: dict[str, Any], note: str) -> None:
    header = f"{'rows':>9} {'r':>2} {'lat s':>7} {'p90 s':>7} {'fit s':>6} {'score s':>7}"
    header += f" {'req/s':>7} {'x r=1':>6} {'model s':>8} {'err':>6}"
    print(header)
    base = {r["rows"]: r["throughput_rps"] for r in results if r["replicas"] == 1}
    checks = {(c["rows"], c["replicas"]): c for c in model.get("checks", [])}
    for r in results:
        speedup = r["throughput_rps"] / base[r["rows"]] if r["rows"] in base else float("nan")
        check = checks.get((r["rows"], r["replicas"]))
        predicted = f"{check['predicted_s']:>8.3f}" if check else f"{'-':>8}"
        error = f"{check['error']:>+6.0%}" if check else f"{'-':>6}"
        print(
            f"{r['rows']:>9} {r['replicas']:>2} {r['latency_s']:>7.3f} {r['latency_p90_s']:>7.3f} "
            f"{r['fit_s']:>6.3f} {r['score_s']:>7.3f} {r['throughput_rps']:>7.2f} "
            f"{speedup:>6.2f} {predicted} {error}"
        )
    if "t0_s" in model:
        print(
            f"model: t = {model['t0_s']:.4f} s + {model['c_us_per_million_rows']:.3f} s/M rows "
            f"x n / min(r, {model['cores']})  (fitted at {model['fitted_at_rows']} rows)"
        )
        if "max_abs_error_held_out" in model:
            print(f"largest error on larger pools: {model['max_abs_error_held_out']:.0%}")
        if serial := model.get("with_serial_term"):
            print(
                f"with a serial term (every point): t0 {serial['t0_s']:.4f} s, "
                f"a {serial['a_s_per_row'] * 1e6:.3f} s/M rows, "
                f"c {serial['c_s_per_row'] * 1e6:.3f} s/M rows"
            )
    else:
        print(f"model: {model.get('error')}")
    print(f"note: {note}")


def run(sizes: Sizes, s3: bool) -> dict[str, Any]:
    n_cores = cores()
    results = []
    with tempfile.TemporaryDirectory(prefix="proxal-bench-scale-") as tmp:
        root = Path(tmp)
        with local_store(root, s3) as (store, flags):
            replicas = start_replicas(store, flags, max(sizes.replicas), root)
            try:
                for i, rows in enumerate(sizes.rows):
                    pool = f"{POOL_PREFIX}{rows}"
                    started = time.perf_counter()
                    version, classes = add_pool(store, pool, rows, sizes.dim, seed=i)
                    print(f"wrote {rows} x {sizes.dim} in {time.perf_counter() - started:.1f} s")
                    rng = np.random.default_rng(100 + i)
                    ids = np.sort(rng.choice(rows, min(sizes.labels, rows // 2), replace=False))
                    training = TrainingSet(
                        ids.astype(np.int64), classes[ids].astype(np.int32), CLASSES
                    )
                    for r in sizes.replicas:
                        addresses = [p.address for p in replicas[:r]]
                        result = measure(addresses, pool, version, rows, training, sizes)
                        print(
                            f"  r={r}: {result['latency_s']:.3f} s, "
                            f"{result['throughput_rps']:.2f} req/s"
                        )
                        results.append(result)
            finally:
                stop_all(replicas)
    return {"results": results, "model": fit_model(results, n_cores), "cores": n_cores}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=None, help="pool sizes")
    parser.add_argument("--replicas", type=int, nargs="+", default=None, help="replica counts")
    parser.add_argument("--requests", type=int, default=None, help="timed requests per case")
    parser.add_argument("--clients", type=int, default=None, help="client threads (throughput)")
    parser.add_argument("--s3", action="store_true", help="store on a local moto S3 server")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="JSON (default bench/results/)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else Sizes()
    sizes = Sizes(
        rows=tuple(sorted(args.rows or base.rows)),
        replicas=tuple(sorted(set(args.replicas or base.replicas))),
        dim=base.dim,
        labels=base.labels,
        requests=args.requests or base.requests,
        clients=args.clients or base.clients,
    )
    if min(sizes.replicas) < 1 or min(sizes.rows) < 2 * max(sizes.replicas):
        parser.error("need replicas >= 1 and at least 2 rows per replica")
    out = args.out or Path("bench/results") / ("scale-quick.json" if args.quick else "scale.json")
    result = run(sizes, args.s3)
    note = SATURATION_NOTE.format(cores=result["cores"])
    print_report(result["results"], result["model"], note)
    report = {
        "machine": platform.platform(),
        "cores": result["cores"],
        "python": platform.python_version(),
        "quick": args.quick,
        "store": "moto s3" if args.s3 else "local disk",
        "strategy": STRATEGY,
        "k": K,
        "classes": CLASSES,
        "sizes": asdict(sizes),
        "note": note,
        "results": result["results"],
        "model": result["model"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
