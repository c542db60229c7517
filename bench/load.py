"""Load: many concurrent clients sending Selects to one proxy replica; zero errors allowed.

    .venv/bin/python bench/load.py [--clients 50] [--requests 100] [--rows 10000]
        [--quick] [--out bench/results/load.json]

One real proxy replica (`python -m proxal.proxy_service` with its default flags: 8 gRPC worker
threads, scoring threads = cores up to 4) serves a version of ``--rows`` x 384 vectors in
77 Gaussian classes (Banking77's shape) from a store on local disk. Each client is a thread
with its own `ProxyClient` playing one labeling session: its request j (0-based) sends a
training set of 100 + 10 j labels of its own random ids (so 100 to 1,090 labels over 100
requests, as an active-learning loop grows them), logistic regression, k = 10, a strategy
cycling least_confidence, margin and entropy, and a new seed every time: every request
fits its own proxy (no model-cache hits), as in a real round. All clients start together
(a barrier) and send their next request as soon as the previous one returns (a closed
loop), after one untimed request has loaded the version.

Reports throughput (requests / wall time), latency percentiles (p50, p95, p99, max, as the
client sees it: queueing on the replica included), the server's median fit and scoring
times, and every error by status code. With C clients in a closed loop, latency is about
C / throughput (Little's law): the replica's worker threads share the machine's cores,
so requests beyond what the cores absorb wait in gRPC's queue rather than being refused.

Prints a table, writes JSON, and exits with status 1 if any request failed. ``--quick``
runs 5 clients x 5 requests on 2,000 rows (a smoke test in seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from proxal.orchestrator_service.rpc.clients import ProxyClient, TrainingSet
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.store import EncoderInfo, Store

POOL = "load"
DIM, CLASSES, K = 384, 77, 10
STRATEGIES = ("least_confidence", "margin", "entropy")
FIRST_LABELS, LABELS_PER_REQUEST = 100, 10
FRAGMENT_ROWS = 50_000
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Config:
    clients: int = 50
    requests: int = 100
    rows: int = 10_000


QUICK = Config(clients=5, requests=5, rows=2_000)


@dataclass(frozen=True)
class Call:
    """One Select as a client saw it."""

    client: int
    index: int
    labels: int
    latency_s: float
    error: str = ""  # the status code name, "" if it succeeded
    fit_s: float = 0.0
    score_s: float = 0.0


def write_pool(store: Store, rows: int, seed: int = 0) -> tuple[str, np.ndarray]:
    """A complete version of `rows` unit vectors in CLASSES clusters; (version, classes)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, size=(CLASSES, DIM))
    classes = rng.integers(0, CLASSES, size=rows)
    store.add_pool_rows(POOL, "train", ["t"] * rows, [None] * rows)
    info = EncoderInfo(model_id="synthetic", backend="none", dim=DIM, max_length=16)
    with store.begin_embedding(POOL, info) as writer:
        for first in range(0, rows, FRAGMENT_ROWS):
            ids = np.arange(first, min(rows, first + FRAGMENT_ROWS))
            vectors = centers[classes[ids]] + rng.normal(0.0, 1.5, size=(len(ids), DIM))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # like sentence vectors
            writer.write(ids, vectors.astype(np.float32))
        version = str(writer.commit().version)
    return version, classes


def session(
    client: int,
    address: str,
    version: str,
    classes: np.ndarray,
    config: Config,
    start: threading.Barrier,
) -> list[Call]:
    """One client's closed loop of `config.requests` Selects."""
    rng = np.random.default_rng(1_000 + client)
    most = FIRST_LABELS + LABELS_PER_REQUEST * (config.requests - 1)
    order = rng.permutation(config.rows)[: min(most, config.rows // 2)]
    proxy = ProxyClient(address, timeout=TIMEOUT_S)
    calls = []
    try:
        start.wait()
        for j in range(config.requests):
            ids = np.sort(order[: FIRST_LABELS + LABELS_PER_REQUEST * j])
            training = TrainingSet(ids.astype(np.int64), classes[ids].astype(np.int32), CLASSES)
            strategy = STRATEGIES[(client + j) % len(STRATEGIES)]
            began = time.perf_counter()
            try:
                result = proxy.select(POOL, version, training, strategy, K, seed=client * 1_000 + j)
            except grpc.RpcError as exc:
                code = exc.code().name if isinstance(exc, grpc.Call) else type(exc).__name__
                calls.append(Call(client, j, len(ids), time.perf_counter() - began, code))
                continue
            latency = time.perf_counter() - began
            ok = len(result.ids) == K and not set(result.ids.tolist()) & set(ids.tolist())
            timings = result.timings
            calls.append(
                Call(
                    client,
                    j,
                    len(ids),
                    latency,
                    "" if ok else "BAD_RESULT",
                    timings["fit_s"],
                    timings["score_s"] + timings["select_s"],
                )
            )
    finally:
        proxy.close()
    return calls


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(calls: list[Call], wall_s: float) -> dict[str, Any]:
    done = [c for c in calls if not c.error]
    latencies = [c.latency_s for c in done]
    return {
        "requests": len(calls),
        "errors": len(calls) - len(done),
        "error_codes": dict(Counter(c.error for c in calls if c.error)),
        "wall_s": wall_s,
        "throughput_rps": len(done) / wall_s,
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=float("nan")),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        },
        "server_s": {
            "fit_p50": percentile([c.fit_s for c in done], 50),
            "score_p50": percentile([c.score_s for c in done], 50),
        },
        "labels": {"min": min(c.labels for c in calls), "max": max(c.labels for c in calls)},
    }


def run(config: Config, log_dir: Path) -> dict[str, Any]:
    """Write the pool, start the replica, run every client; the summary."""
    store = Store(str(log_dir / "store"))
    started = time.perf_counter()
    version, classes = write_pool(store, config.rows)
    print(f"wrote {config.rows} x {DIM} in {time.perf_counter() - started:.1f} s")
    with ServiceProcess("proxy_service", store.uri, [], log_path=log_dir / "proxy.log") as proxy:
        warm = ProxyClient(proxy.address, timeout=TIMEOUT_S)
        try:  # loads the version into the replica's cache
            ids = np.arange(FIRST_LABELS, dtype=np.int64)
            training = TrainingSet(ids, classes[ids].astype(np.int32), CLASSES)
            warm.select(POOL, version, training, STRATEGIES[0], K, seed=0)
        finally:
            warm.close()
        barrier = threading.Barrier(config.clients + 1)
        results: list[list[Call]] = [[] for _ in range(config.clients)]

        def client(i: int) -> None:
            results[i] = session(i, proxy.address, version, classes, config, barrier)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(config.clients)]
        for thread in threads:
            thread.start()
        barrier.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
    return summarise([c for calls in results for c in calls], wall)


def print_report(config: Config, summary: dict[str, Any]) -> None:
    lat = summary["latency_s"]
    print(
        f"{'clients':>7} {'requests':>8} {'errors':>6} {'wall s':>7} {'req/s':>6} "
        f"{'p50 s':>6} {'p95 s':>6} {'p99 s':>6} {'max s':>6} {'fit s':>6} {'score s':>7}"
    )
    print(
        f"{config.clients:>7} {summary['requests']:>8} {summary['errors']:>6} "
        f"{summary['wall_s']:>7.1f} {summary['throughput_rps']:>6.1f} {lat['p50']:>6.2f} "
        f"{lat['p95']:>6.2f} {lat['p99']:>6.2f} {lat['max']:>6.2f} "
        f"{summary['server_s']['fit_p50']:>6.3f} {summary['server_s']['score_p50']:>7.3f}"
    )
    if summary["errors"]:
        print(f"ERRORS: {summary['error_codes']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=None, help="Selects per client")
    parser.add_argument("--rows", type=int, default=None, help="pool size")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="JSON (default bench/results/)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else Config()
    config = Config(
        clients=args.clients or base.clients,
        requests=args.requests or base.requests,
        rows=args.rows or base.rows,
    )
    most = FIRST_LABELS + LABELS_PER_REQUEST * (config.requests - 1)
    if config.clients < 1 or config.requests < 1 or config.rows < 2 * most:
        parser.error(f"need clients, requests >= 1 and rows >= {2 * most} (twice the labels)")
    out = args.out or Path("bench/results") / ("load-quick.json" if args.quick else "load.json")
    os.environ.setdefault("LANCE_LOG", "error")  # not its notes about new datasets
    load_before = os.getloadavg()  # the machine may be shared: say how busy it was
    with tempfile.TemporaryDirectory(prefix="proxal-bench-load-") as tmp:
        summary = run(config, Path(tmp))
    print_report(config, summary)
    report = {
        "machine": platform.platform(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "quick": args.quick,
        "config": asdict(config),
        "pool": {"rows": config.rows, "dim": DIM, "classes": CLASSES, "store": "local disk"},
        "replica": "python -m proxal.proxy_service, default flags (8 workers, threads = cores)",
        "request": {"k": K, "strategies": STRATEGIES, "classifier": "logreg"},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        **summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
