"""Sequential selection latency: label received -> next item returned, warm vs cold refits.

    .venv/bin/python bench/sequential.py [--out bench/results/sequential.json]

A 100K x 384 synthetic pool (4 Gaussian clusters), 20 starting labels, 50 sequential steps
answered from the synthetic truth, least confidence with the logistic-regression proxy.
Measured in-process (`SequentialSession.label`) and over a real loopback gRPC stream
(`ProxyService.SelectSequential`, the server's `latency_s` and the client's round trip),
with a warm-started refit per label and, side by side, a cold one. BLAS is limited to one
thread and the pool is scored on 2 threads, as the service runs. Each mode runs ROUNDS
times (different seeds, interleaved so background load hits all modes alike); the table
pools their steps. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.cache import LoadedVersion, VersionCache
from proxal.proxy_service.selection import Query, TrainingSet
from proxal.proxy_service.sequential import SequentialSession
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime.arrays import pack_int32, pack_int64
from proxal.runtime.server import ServerSettings, grpc_channel_options, start_server
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import Store
from threadpoolctl import threadpool_limits

N, DIM, CLASSES = 100_000, 384, 4
START_LABELS, STEPS, ROUNDS = 20, 50, 3
SCORE_THREADS = 2
STRATEGY = "least_confidence"
TARGET_S = 0.050


def make_pool() -> tuple[LoadedVersion, np.ndarray]:
    """Overlapping Gaussian clusters: (version with ids 0..N-1, true class per id)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 0.12, size=(CLASSES, DIM)).astype(np.float32)
    truth = rng.integers(0, CLASSES, size=N)
    vectors = centers[truth] + rng.standard_normal((N, DIM), dtype=np.float32)
    vectors.flags.writeable = False
    ids = np.arange(N, dtype=np.int64)
    return LoadedVersion(EmbeddingVersion("bench", "v1"), ids, vectors), truth


def start_ids(truth: np.ndarray, seed: int) -> np.ndarray:
    """START_LABELS random ids covering every class (so no step falls back)."""
    rng = np.random.default_rng(seed)
    while True:
        ids = np.sort(rng.choice(N, START_LABELS, replace=False))
        if len(np.unique(truth[ids])) == CLASSES:
            return ids


def in_process(version: LoadedVersion, truth: np.ndarray, seed: int, warm: bool) -> dict[str, Any]:
    ids = start_ids(truth, seed)
    query = Query(
        training=TrainingSet(ids, truth[ids].astype(np.int32), CLASSES),
        strategy=STRATEGY,
        k=1,
        seed=seed,
    )
    session, step = SequentialSession.start(
        lambda: version, query, threads=SCORE_THREADS, warm_start=warm
    )
    latency, fit, score, select, picks, iters = [], [], [], [], [], []
    for _ in range(STEPS):
        picks.append(step.id)
        start = time.perf_counter()
        next_step = session.label(step.id, int(truth[step.id]))
        wall = time.perf_counter() - start
        assert next_step is not None and next_step.warm_started == warm
        step = next_step
        latency.append(wall)
        fit.append(step.timings.fit_s)
        score.append(step.timings.score_s)
        select.append(step.timings.select_s)
        iters.append(getattr(session.model, "n_iter_", 0))
    return {
        "latency": latency,
        "fit": fit,
        "score": score,
        "select": select,
        "picks": picks,
        "iters": iters,
    }


def over_grpc(
    stub: proxy_pb2_grpc.ProxyServiceStub,
    servicer: ProxyServicer,
    truth: np.ndarray,
    seed: int,
    warm: bool,
) -> dict[str, Any]:
    servicer.sequential_warm_start = warm
    ids = start_ids(truth, seed)
    start = proxy_pb2.SelectRequest(
        pool="bench",
        embedding_version="v1",
        training=proxy_pb2.TrainingSet(
            ids=common_pb2.Int64Array(data=pack_int64(ids)),
            labels=common_pb2.Int32Array(data=pack_int32(truth[ids].astype(np.int32))),
            num_classes=CLASSES,
        ),
        strategy=STRATEGY,
        seed=seed,
    )
    requests: queue.Queue[proxy_pb2.SequentialRequest | None] = queue.Queue()
    requests.put(proxy_pb2.SequentialRequest(start=start))
    responses = stub.SelectSequential(iter(requests.get, None), timeout=600)
    response = next(responses)
    latency, round_trip, fit, score, picks = [], [], [], [], []
    for _ in range(STEPS):
        picks.append(response.id)
        label = proxy_pb2.Label(id=response.id, label=int(truth[response.id]))
        sent = time.perf_counter()
        requests.put(proxy_pb2.SequentialRequest(label=label))
        response = next(responses)
        round_trip.append(time.perf_counter() - sent)
        latency.append(response.latency_s)
        fit.append(response.timings.fit_s)
        score.append(response.timings.score_s + response.timings.select_s)
    requests.put(None)
    assert list(responses) == []
    return {
        "latency": latency,
        "round_trip": round_trip,
        "fit": fit,
        "score": score,
        "picks": picks,
    }


def summary(path: str, warm: bool, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def ms(key: str, q: float) -> float | None:
        if key not in runs[0]:
            return None
        return float(np.quantile(np.concatenate([r[key] for r in runs]), q) * 1e3)

    return {
        "path": path,
        "refit": "warm" if warm else "cold",
        "steps": sum(len(r["latency"]) for r in runs),
        "median_ms": ms("latency", 0.5),
        "p90_ms": ms("latency", 0.9),
        "client_round_trip_median_ms": ms("round_trip", 0.5),
        "client_round_trip_p90_ms": ms("round_trip", 0.9),
        "fit_median_ms": ms("fit", 0.5),
        "score_median_ms": ms("score", 0.5),
        "select_median_ms": ms("select", 0.5),
        "lbfgs_iterations_median": (
            float(np.median(np.concatenate([r["iters"] for r in runs])))
            if "iters" in runs[0]
            else None
        ),
    }


def print_table(rows: list[dict[str, Any]], load_before: tuple[float, ...]) -> bool:
    """Print one line per (path, refit) → whether the warm medians meet the target."""
    print(f"{N} x {DIM}, {CLASSES} classes, {START_LABELS} start labels, {STEPS} steps x {ROUNDS}")
    print(f"BLAS 1 thread, score threads {SCORE_THREADS}; load average before {load_before}")
    header = f"{'path':<11} {'refit':<5} {'median ms':>9} {'p90 ms':>7} {'client ms':>9} "
    print(header + f"{'fit ms':>7} {'score ms':>8} {'lbfgs it':>8}")
    for r in rows:
        client = r["client_round_trip_median_ms"]
        print(
            f"{r['path']:<11} {r['refit']:<5} {r['median_ms']:>9.1f} {r['p90_ms']:>7.1f} "
            f"{'-' if client is None else f'{client:.1f}':>9} {r['fit_median_ms']:>7.1f} "
            f"{r['score_median_ms']:>8.1f} "
            f"{'-' if r['lbfgs_iterations_median'] is None else r['lbfgs_iterations_median']:>8}"
        )
    warm_medians = [r["median_ms"] for r in rows if r["refit"] == "warm"]
    met = max(warm_medians) <= TARGET_S * 1e3
    print(
        f"target: median <= {TARGET_S * 1e3:.0f} ms with warm refits: {'met' if met else 'NOT met'}"
    )
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/sequential.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    version, truth = make_pool()
    threadpool_limits(limits=1, user_api="blas")  # what `python -m proxal.proxy_service` does

    with tempfile.TemporaryDirectory() as tmp:
        cache = VersionCache(Store(tmp), max_versions=1, max_models=1)
        # loaded, as after a first call
        cache.versions.get(EmbeddingVersion("bench", "v1"), lambda: version)
        servicer = ProxyServicer(cache, score_threads=SCORE_THREADS)
        running = start_server(
            ServerSettings(port=0, max_workers=4),
            lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
            [SERVICE_NAME],
        )
        channel = grpc.insecure_channel(running.address, options=grpc_channel_options())
        stub = proxy_pb2_grpc.ProxyServiceStub(channel)
        runs: dict[tuple[str, bool], list[dict[str, Any]]] = {}
        in_process(version, truth, 99, True)  # warm-up: imports, thread pools, caches
        for seed in range(ROUNDS):
            for warm in (True, False):
                runs.setdefault(("in-process", warm), []).append(
                    in_process(version, truth, seed, warm)
                )
                runs.setdefault(("grpc", warm), []).append(
                    over_grpc(stub, servicer, truth, seed, warm)
                )
        channel.close()
        running.stop(0)

    rows = [summary(path, warm, r) for (path, warm), r in runs.items()]
    same = [
        float(np.mean(np.equal(a["picks"], b["picks"])))
        for a, b in zip(runs[("in-process", True)], runs[("grpc", True)], strict=True)
    ]
    met = print_table(rows, load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cores": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "pool": N,
                "dim": DIM,
                "classes": CLASSES,
                "start_labels": START_LABELS,
                "steps": STEPS,
                "rounds": ROUNDS,
                "strategy": STRATEGY,
                "blas_threads": 1,
                "score_threads": SCORE_THREADS,
                "target_median_ms": TARGET_S * 1e3,
                "target_met": met,
                "grpc_picks_same_as_in_process": same,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
