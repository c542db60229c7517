"""Session-state load: concurrent annotators' NextBatch + SubmitLabels on one `proxal serve`.

    .venv/bin/python bench/sessions_db.py [--annotators 50] [--rounds 8] [--rows 20000]
        [--backends sqlite,postgresql,lance] [--strategy margin] [--max-seconds 90]
        [--postgres-url URL] [--out bench/results/sessions_db.json]

Per backend, a fresh store holding one synthetic pool (``--rows`` x 32 dims, 4 Gaussian
classes with gold labels), a real proxy replica (`python -m proxal.proxy_service`) and a
real orchestrator (`python -m proxal.orchestrator_service serve`) on loopback, one session
(batch size 5). The backends, all in one run:

- ``sqlite``: the current orchestrator, session state in ``<store>/proxal.db``;
- ``postgresql``: the current orchestrator on a real PostgreSQL server (tests/postgres.py,
  or ``--postgres-url``, a database of its own);
- ``lance``: the orchestrator of commit b6dfc1e (session state in LanceDB tables), run
  from a `git archive` of that commit laid out as installed (PYTHONPATH); the bench checks
  that its process imports that tree.

Each annotator is a thread with its own channel: NextBatch(k=5) then SubmitLabels of those
items with their gold labels and a fresh request id, ``--rounds`` times (a closed loop, no
retries), stopping early after ``--max-seconds``. One untimed round warms the proxy first.
Reports rounds/s, NextBatch and SubmitLabels latency (p50/p99), errors by status code,
items handed to two annotators, and labels acknowledged vs in the session at the end.
Writes JSON with ratios against ``lance``; exits 1 on INTERNAL, a double lease or a lost
label.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.rpc.clients import open_channel
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.store import EncoderInfo, Store

REPO = Path(__file__).resolve().parent.parent
BASELINE = "b6dfc1e"  # the last commit with session state in LanceDB tables
BACKENDS = ("sqlite", "postgresql", "lance")
POOL, SESSION, DIM, K = "bench", "bench", 32, 5
CLASSES = ("alpha", "beta", "gamma", "delta")
CALL_TIMEOUT_S = 120.0
LAYOUT = {  # proxal/<name> -> the source tree's directory, as installed (Makefile typecheck)
    "runtime": "proxal_runtime",
    "store": "proxal_store",
    "encoder_service": "encoder_service",
    "proxy_service": "proxy_service",
    "orchestrator_service": "orchestrator",
}


@dataclass(frozen=True)
class Config:
    annotators: int = 50
    rounds: int = 8
    rows: int = 20_000
    strategy: str = "margin"
    max_seconds: float = 90.0
    backends: tuple[str, ...] = BACKENDS


@dataclass
class Annotator:
    """What one annotator saw: latencies (s) per RPC, error codes, ids it was handed."""

    next_s: list[float] = field(default_factory=list)
    submit_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # code -> its first message
    handed: list[int] = field(default_factory=list)
    rounds: int = 0
    accepted: int = 0
    resumed: int = 0


def write_pool(uri: str, rows: int, seed: int = 0) -> list[str]:
    """One pool of `rows` Gaussian blobs in CLASSES, embedded as one version; gold labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), size=rows)
    x = rng.normal(scale=4.0, size=(len(CLASSES), DIM))[y] + rng.normal(size=(rows, DIM))
    gold = [CLASSES[c] for c in y]
    store = Store(uri)
    store.add_pool_rows(POOL, "train", [f"text {i}" for i in range(rows)], gold)
    with store.begin_embedding(POOL, EncoderInfo("synthetic", "none", DIM, 0)) as writer:
        writer.write(np.arange(rows), x.astype(np.float32))
        writer.commit()
    return gold


def baseline_tree(tmp: Path) -> Path:
    """Commit BASELINE extracted under `tmp`, plus a directory to put on PYTHONPATH whose
    `proxal/` links its source directories as installed -> that directory."""
    src, site = tmp / "src", tmp / "site"
    src.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", BASELINE], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    package = site / "proxal"
    package.mkdir(parents=True)
    for entry in (src / "protos" / "proxal").iterdir():
        (package / entry.name).symlink_to(entry)
    for name, directory in LAYOUT.items():
        (package / name).symlink_to(src / directory)
    return site


def check_baseline(site: Path) -> str:
    """The file `proxal.store` resolves to under PYTHONPATH=`site`; it must be the
    baseline's (whose store has no `sql` package), else RuntimeError."""
    probe = (
        "import proxal.store, proxal.orchestrator_service.sessions.live as live; "
        "print(proxal.store.__file__); print(live.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=site,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    store_file, live_file = (Path(p) for p in out)
    resolved = (site / "proxal" / "store").resolve()
    if store_file.resolve().parent != resolved or (resolved / "sql").exists():
        raise RuntimeError(f"the baseline imports {store_file}, not commit {BASELINE}'s store")
    if site not in live_file.parents:
        raise RuntimeError(f"the baseline orchestrator imports {live_file}")
    return str(store_file)


@contextlib.contextmanager
def pythonpath(site: Path | None) -> Iterator[None]:
    """PYTHONPATH=`site` for the block (children spawned in it inherit it); None: as is."""
    before = os.environ.get("PYTHONPATH")
    if site is not None:
        os.environ["PYTHONPATH"] = str(site)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def start_orchestrator(
    store: str, proxy: str, db_url: str, site: Path | None, log: Path
) -> ServiceProcess:
    """`serve` over `store` (current code with `--db`, or the baseline's from `site`)."""
    extra = ["--proxy", proxy] + ([] if site is not None else ["--db", db_url])
    process = ServiceProcess("orchestrator", store, extra, log_path=log, command=("serve",))
    with pythonpath(site):
        process.spawn()
    return process.wait_ready()


def annotate(
    name: str, address: str, gold: list[str], config: Config, start: threading.Barrier
) -> Annotator:
    """One annotator's closed loop of NextBatch + SubmitLabels (no retries)."""
    seen = Annotator()
    channel = open_channel(address)
    stub = pb_grpc.OrchestratorServiceStub(channel)
    try:
        start.wait()
        deadline = time.monotonic() + config.max_seconds
        for _ in range(config.rounds):
            if time.monotonic() > deadline:
                break
            try:
                began = time.perf_counter()
                batch = stub.NextBatch(
                    pb.NextBatchRequest(session=SESSION, k=K, annotator=name),
                    timeout=CALL_TIMEOUT_S,
                )
                seen.next_s.append(time.perf_counter() - began)
                seen.resumed += batch.resumed
                ids = [item.id for item in batch.items]
                seen.handed += [] if batch.resumed else ids
                request = pb.SubmitLabelsRequest(
                    session=SESSION,
                    labels=[pb.Label(id=i, label=gold[i]) for i in ids],
                    request_id=uuid.uuid4().hex,
                    annotator=name,
                )
                began = time.perf_counter()
                reply = stub.SubmitLabels(request, timeout=CALL_TIMEOUT_S)
                seen.submit_s.append(time.perf_counter() - began)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                name = code.name if code is not None else type(exc).__name__
                seen.errors[name] += 1
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                seen.examples.setdefault(name, str(details)[:300])
                continue
            seen.accepted += reply.accepted
            seen.rounds += 1
    finally:
        channel.close()
    return seen


def drive(address: str, gold: list[str], config: Config) -> tuple[list[Annotator], float, int]:
    """Create the session, warm it with one untimed round, run every annotator ->
    (annotators, wall seconds, labels in the session at the end)."""
    with contextlib.closing(open_channel(address)) as channel:
        stub = pb_grpc.OrchestratorServiceStub(channel)
        stub.CreateSession(
            pb.CreateSessionRequest(
                session=SESSION, pool=POOL, strategy=config.strategy, batch_size=K, seed=0
            ),
            timeout=CALL_TIMEOUT_S,
        )
        warm = Config(annotators=1, rounds=1, max_seconds=CALL_TIMEOUT_S)
        warmed = annotate("warmup", address, gold, warm, threading.Barrier(1))
        if warmed.errors:
            raise RuntimeError(f"the warm-up round failed: {dict(warmed.errors)}")
        barrier = threading.Barrier(config.annotators + 1)
        seen = [Annotator() for _ in range(config.annotators)]

        def work(i: int) -> None:
            seen[i] = annotate(f"ann{i:03d}", address, gold, config, barrier)

        threads = [
            threading.Thread(target=work, args=(i,), daemon=True) for i in range(config.annotators)
        ]
        for thread in threads:
            thread.start()
        barrier.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        status = stub.Status(pb.StatusRequest(session=SESSION), timeout=CALL_TIMEOUT_S)
    return seen, wall, int(status.labels) - warmed.accepted


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds (NaN when empty)."""
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ms = np.asarray(values) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def summarise(seen: list[Annotator], wall_s: float, labels: int) -> dict[str, Any]:
    """One backend's numbers from what its annotators saw."""
    owners: defaultdict[int, set[int]] = defaultdict(set)
    for n, annotator in enumerate(seen):
        for i in annotator.handed:
            owners[i].add(n)
    errors = sum((a.errors for a in seen), Counter[str]())
    rounds = sum(a.rounds for a in seen)
    acked = sum(a.accepted for a in seen)
    return {
        "rounds": rounds,
        "wall_s": wall_s,
        "rounds_per_s": rounds / wall_s if wall_s > 0 else 0.0,
        "next_batch": percentiles([x for a in seen for x in a.next_s]),
        "submit": percentiles([x for a in seen for x in a.submit_s]),
        "errors": sum(errors.values()),
        "error_codes": dict(errors),
        "error_examples": {k: v for a in seen for k, v in a.examples.items()},
        "double_leased": sum(1 for who in owners.values() if len(who) > 1),
        "resumed_batches": sum(a.resumed for a in seen),
        "labels_acknowledged": acked,
        "labels_in_session": labels,
    }


def run_backend(
    backend: str, template: Path, tmp: Path, gold: list[str], config: Config, db: str,
    site: Path | None,
) -> dict[str, Any]:  # fmt: skip
    """A fresh copy of the pool's store, a proxy and an orchestrator on `backend` -> summary."""
    store = tmp / backend / "store"
    shutil.copytree(template, store)
    db_url = db or f"sqlite:///{store / 'proxal.db'}"
    logs = tmp / backend
    with ServiceProcess("proxy_service", str(store), [], log_path=logs / "proxy.log") as proxy:
        orchestrator = start_orchestrator(
            str(store), proxy.address, db_url, site, logs / "orchestrator.log"
        )
        try:
            seen, wall, labels = drive(orchestrator.address, gold, config)
        finally:
            orchestrator.stop()
    summary = summarise(seen, wall, labels)
    summary["session_db"] = "lance tables (b6dfc1e)" if site else _shown(db_url)
    if site is not None and (store / "proxal.db").exists():
        raise RuntimeError("the baseline wrote proxal.db: it did not run commit b6dfc1e's code")
    return summary


def _shown(url: str) -> str:
    """A database URL without its password."""
    head, sep, tail = url.partition("@")
    return f"{head.rsplit(':', 1)[0]}:***@{tail}" if sep else url


@contextlib.contextmanager
def postgres(url: str) -> Iterator[str]:
    """`url` if given, else a fresh database on a PostgreSQL server started (and stopped
    after the block) for this run."""
    if url:
        yield url
        return
    sys.path.insert(0, str(REPO))
    from tests.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        yield server.database()
    finally:
        server.stop()


def run_all(config: Config, tmp: Path, postgres_url: str) -> dict[str, dict[str, Any]]:
    """Every backend in `config.backends`, one after the other, on copies of one pool."""
    template = tmp / "template"
    gold = write_pool(str(template), config.rows)
    results: dict[str, dict[str, Any]] = {}
    for backend in config.backends:
        began = time.perf_counter()
        site = baseline = None
        if backend == "lance":
            site = baseline_tree(tmp / "baseline")
            baseline = check_baseline(site)
        with postgres(postgres_url if backend == "postgresql" else "") as url:
            db = url if backend == "postgresql" else ""
            results[backend] = run_backend(backend, template, tmp, gold, config, db, site)
        if baseline:
            results[backend]["baseline_store_module"] = baseline
        print(f"{backend}: done in {time.perf_counter() - began:.0f} s", flush=True)
    return results


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each SQL backend's rounds/s and latencies divided by the Lance baseline's."""
    base = results.get("lance")
    if not base or not base["rounds"]:
        return {}
    out = {}
    for backend, r in results.items():
        if backend == "lance":
            continue
        out[backend] = {"rounds_per_s": r["rounds_per_s"] / base["rounds_per_s"]}
        for rpc in ("next_batch", "submit"):
            for q in ("p50_ms", "p99_ms"):
                out[backend][f"{rpc}_{q}"] = r[rpc][q] / base[rpc][q]
    return out


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'backend':<11}| {'rounds':>6} | {'rounds/s':>8} | {'NextBatch p50/p99 ms':>20} | "
        f"{'Submit p50/p99 ms':>17} | {'errors':>6} | {'double-leased':>13}"
    )
    for backend, r in results.items():
        nb, sb = r["next_batch"], r["submit"]
        print(
            f"{backend:<11}| {r['rounds']:>6} | {r['rounds_per_s']:>8.2f} | "
            f"{nb['p50_ms']:>9.1f} / {nb['p99_ms']:>8.1f} | "
            f"{sb['p50_ms']:>7.1f} / {sb['p99_ms']:>7.1f} | {r['errors']:>6} | "
            f"{r['double_leased']:>13}"
        )
        if r["errors"]:
            print(f"  {backend} errors: {r['error_codes']} e.g. {r['error_examples']}")


def failures(results: dict[str, dict[str, Any]]) -> list[str]:
    """Why the run failed: INTERNAL errors, double leases, acknowledged labels not kept."""
    out = []
    for backend, r in results.items():
        if r["error_codes"].get("INTERNAL"):
            out.append(f"{backend}: {r['error_codes']['INTERNAL']} INTERNAL error(s)")
        if r["double_leased"]:
            out.append(f"{backend}: {r['double_leased']} item(s) handed to two annotators")
        if r["labels_in_session"] != r["labels_acknowledged"]:
            out.append(
                f"{backend}: {r['labels_acknowledged']} labels acknowledged, "
                f"{r['labels_in_session']} in the session"
            )
    return out


def machine() -> dict[str, Any]:
    """CPU model, cores, Python, load."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model or platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def commits() -> dict[str, Any]:
    """This checkout's commit, and the tree the current orchestrator runs from (the
    installed `proxal`: its commit and uncommitted files)."""
    import proxal.store

    def git(where: Path, *args: str) -> str:
        done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
        return done.stdout.strip()

    code = Path(proxal.store.__file__).resolve().parent.parent
    return {
        "bench": git(REPO, "rev-parse", "HEAD"),
        "current_code": str(code),
        "current_commit": git(code, "rev-parse", "HEAD"),
        "current_uncommitted": git(code, "status", "--porcelain").splitlines(),
        "baseline": git(REPO, "rev-parse", BASELINE),
    }


def parse(argv: list[str] | None) -> tuple[Config, str, Path]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--annotators", type=int, default=Config.annotators)
    parser.add_argument("--rounds", type=int, default=Config.rounds, help="per annotator")
    parser.add_argument("--rows", type=int, default=Config.rows, help="pool size")
    parser.add_argument("--strategy", default=Config.strategy, help="the session's strategy")
    parser.add_argument(
        "--max-seconds", type=float, default=Config.max_seconds,
        help="per backend: annotators start no round after this",
    )  # fmt: skip
    parser.add_argument("--backends", default=",".join(BACKENDS), help="a subset, in order")
    parser.add_argument("--postgres-url", default="", help="an empty database (default: own)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/sessions_db.json")
    args = parser.parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    if not backends or set(backends) - set(BACKENDS):
        parser.error(f"--backends: a comma-separated subset of {','.join(BACKENDS)}")
    need = (args.annotators * args.rounds + 1) * K
    if args.annotators < 1 or args.rounds < 1 or args.rows < need:
        parser.error(f"need annotators, rounds >= 1 and rows >= {need}")
    config = Config(
        args.annotators, args.rounds, args.rows, args.strategy, args.max_seconds, backends
    )
    return config, args.postgres_url, args.out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config, postgres_url, out = parse(argv)
    os.environ.setdefault("LANCE_LOG", "error")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="proxal-bench-sessions-") as tmp:
        results = run_all(config, Path(tmp), postgres_url)
    print_table(results)
    report = {
        "machine": machine(),
        "commits": commits(),
        "config": asdict(config),
        "workload": {
            "pool": {"rows": config.rows, "dim": DIM, "classes": len(CLASSES)},
            "k": K,
            "orchestrator": "proxal serve, default flags (8 gRPC workers), one session",
            "client": "one thread and channel per annotator, closed loop, no retries",
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": results,
        "ratios_vs_lance": ratios(results),
        "failures": failures(results),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    for reason in report["failures"]:
        print(f"FAILED: {reason}")
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
