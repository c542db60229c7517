"""Fan-out: one embedding run split over several encoder worker processes.

The coordinator (`fan_out`, what EmbedPool does with workers > 1) begins one run, splits
the pool's ids into disjoint ranges, claims each range in the store (`Store.claim_range`)
and starts one worker per range: ``python -m proxal.encoder_service embed-range ...``, the
same command an operator runs on another host that shares the store. Workers are plain
subprocesses, not multiprocessing: one documented command serves both cases, a worker
starts clean (no fork of the gRPC server's threads) and a SIGKILL is a plain exit status.

A worker embeds only the ids of its range that the run has not written and writes them in
durable chunks (`EmbeddingWriter.write`: fragment files plus a row in the run's
bookkeeping); workers never commit. When every range is done the coordinator commits the
run once, as one version, exactly as a resumed run commits. A worker that exits nonzero is
replaced (for the still missing ids of its range) up to WORKER_RETRIES times; after that
the run stays running, so a restarted encoder (recovery.py) finishes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt
from proxal.encoder_service.encoders import (
    AUTO,
    BACKENDS,
    DEFAULT_MODEL,
    TORCH,
    Encoder,
    EncoderCache,
    resolve_precision,
)
from proxal.encoder_service.pipeline import (
    PROGRESS_INTERVAL_S,
    Progress,
    ProgressCallback,
    check_batch_size,
    encoder_info,
    missing_rows,
    write_chunks,
)
from proxal.encoder_service.settings import (
    DEFAULT_CLAIM_LEASE_S,
    DEFAULT_ONNX_CACHE,
    DEFAULT_WRITE_CHUNK_ROWS,
    PREFIX,
    EncoderSettings,
)
from proxal.runtime.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ProxalError,
    UnavailableError,
)
from proxal.runtime.settings import DEFAULT_STORE, configure_logging, env_default
from proxal.store import Store, VersionInfo
from proxal.store.records import RUNNING

log = logging.getLogger(__name__)

WORKER_RETRIES = 2  # replacements per range before the run is left for recovery
SUBCOMMANDS = ("embed-begin", "embed-range", "embed-commit")
IdRange = tuple[int, int]  # ids start..end-1


class WorkersFailedError(UnavailableError):
    """A range's workers kept dying; the run stays running (resumable)."""


# ------------------------------------------------------------------ ranges and claims
def parse_ids(text: str) -> IdRange:
    """ "START:END" (END exclusive, START >= 0, END > START) -> (start, end)."""
    start, sep, end = text.partition(":")
    try:
        span = (int(start), int(end))
    except ValueError:
        span = (-1, -1)
    if not sep or span[0] < 0 or span[1] <= span[0]:
        raise InvalidArgumentError(
            f"ids must be START:END with 0 <= START < END (END exclusive), got {text!r}"
        )
    return span


def check_workers(workers: int, rows: int, cap: int) -> int:
    """The number of processes for `workers` (0 or 1: one) over a pool of `rows` rows."""
    if workers < 0:
        raise InvalidArgumentError(f"workers must be >= 0 (0 or 1: one process), got {workers}")
    if workers > rows:
        raise InvalidArgumentError(f"workers {workers} is more than the pool's {rows} rows")
    if workers > cap:
        raise InvalidArgumentError(
            f"workers {workers} is over this server's cap of {cap} (--max-embed-workers)"
        )
    return max(workers, 1)


def split_ranges(ids: npt.NDArray[np.int64], parts: int) -> list[IdRange]:
    """Sorted pool ids (n,) -> `parts` (<= n) disjoint ranges covering them all, with
    row counts differing by at most one."""
    bounds = [i * len(ids) // parts for i in range(parts + 1)]
    ends = [int(ids[b]) for b in bounds[1:-1]] + [int(ids[-1]) + 1]
    return [(int(ids[b]), end) for b, end in zip(bounds[:-1], ends, strict=True)]


class ClaimKeeper:
    """Claims id ranges of one run and keeps them live (a renewal every lease/3 on a
    thread) until closed, then releases them. A context manager."""

    def __init__(self, store: Store, pool: str, version: str, owner: str, lease_s: float):
        self.store, self.pool, self.version = store, pool, version
        self.owner, self.lease_s = owner, lease_s
        self.claims: dict[IdRange, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="claims", daemon=True)

    def claim(self, span: IdRange) -> str:
        """Claim `span`; FailedPreconditionError if a live claim overlaps it."""
        claim = self.store.claim_range(self.pool, self.version, *span, self.owner, self.lease_s)
        self.claims[span] = claim
        return claim

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                claims = {claim: span for span, claim in list(self.claims.items())}
                self.store.renew_claims(self.pool, self.version, claims, self.owner, self.lease_s)
            except Exception:  # a store hiccup: the next renewal may still make it
                log.warning("could not renew the claims on run %s", self.version, exc_info=True)

    def __enter__(self) -> ClaimKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.claims:
            self.store.release_claims(self.pool, self.version, list(self.claims.values()))


# ------------------------------------------------------------------ the worker
def running_run(store: Store, pool: str, version: str) -> VersionInfo:
    """The run `pool/version`, which must be running and from a pretrained model."""
    info = next(
        (v for v in store.list_versions(pool, include_incomplete=True) if v.version == version),
        None,
    )
    if info is None:
        raise NotFoundError(f"embedding run {pool}/{version} not found")
    if info.status != RUNNING:
        raise FailedPreconditionError(
            f"embedding run {pool}/{version} is {info.status}; only running runs take workers"
        )
    if info.source != "pretrained":
        raise FailedPreconditionError(
            f"embedding run {pool}/{version} is from a checkpoint; it cannot be fanned out"
        )
    return info


def embed_range(
    store: Store,
    pool: str,
    version: str,
    encoder: Encoder,
    span: IdRange,
    batch_size: int,
    chunk_rows: int,
    report: Callable[[int, int], None],
) -> int:
    """Embed the ids of `span` that run `pool/version` lacks, in durable chunks, without
    committing; `report(done, rows)` (rows of the range done, rows in it) at the start and
    after each batch. Returns the rows written."""
    writer = store.resume_embedding(pool, version)  # never committed nor aborted here
    ids, texts, rows = missing_rows(store, writer, span)
    done = rows - len(ids)
    report(done, rows)

    def on_batch(batch_rows: int) -> None:
        nonlocal done
        done += batch_rows
        report(done, rows)

    write_chunks(writer, encoder, ids, texts, batch_size, chunk_rows, on_batch)
    return len(ids)


def _exit_with_parent(parent_pid: int) -> None:
    """Exit (status 3) as soon as the process `parent_pid` is no longer our parent: a
    coordinator that dies takes its workers along, so recovery resumes the run alone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _print_progress(done: int, rows: int) -> None:
    print(json.dumps({"done": done, "rows": rows}), flush=True)


def run_range(args: argparse.Namespace, store: Store) -> int:
    """`embed-range`: claim the range (unless the coordinator did), embed it, release it."""
    span = parse_ids(args.ids)
    check_batch_size(args.batch_size)
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    info = running_run(store, args.pool, args.version)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    with ClaimKeeper(store, args.pool, args.version, owner, args.lease_s) as keeper:
        if not args.claim:
            keeper.claim(span)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        encoder = EncoderCache(Path(args.onnx_cache).expanduser()).get(
            info.model_id, info.backend, info.max_length, info.precision
        )
        written = embed_range(
            store,
            args.pool,
            args.version,
            encoder,
            span,
            args.batch_size,
            args.write_chunk_rows,
            _print_progress,
        )
    log.info("ids %s of %s/%s: wrote %d rows", args.ids, args.pool, args.version, written)
    return 0


# ------------------------------------------------------------------ the coordinator
@dataclass
class _Slot:
    """One range of a fan-out run and its current worker process."""

    span: IdRange
    process: subprocess.Popen[str] | None = None
    done: int = 0
    failures: int = 0
    finished: bool = False


def _worker_command(
    store: Store,
    version: str,
    pool: str,
    span: IdRange,
    batch_size: int,
    threads: int,
    settings: EncoderSettings,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "proxal.encoder_service",
        "embed-range",
        "--store",
        store.uri,
        "--pool",
        pool,
        "--version",
        version,
        "--ids",
        f"{span[0]}:{span[1]}",
        "--batch-size",
        str(batch_size),
        "--write-chunk-rows",
        str(settings.write_chunk_rows),
        "--onnx-cache",
        str(settings.onnx_cache),
        "--threads",
        str(threads),
        "--lease-s",
        str(settings.claim_lease_s),
        "--claim",
        "--parent-pid",
        str(os.getpid()),
    ]


class _Workers:
    """Starts, watches and replaces the worker processes of one fan-out run."""

    def __init__(
        self,
        store: Store,
        pool: str,
        version: str,
        batch_size: int,
        settings: EncoderSettings,
        slots: list[_Slot],
    ):
        self.store, self.pool, self.version = store, pool, version
        self.batch_size, self.settings, self.slots = batch_size, settings, slots
        self.threads = max(1, (os.cpu_count() or 1) // len(slots))
        self.lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
        self.env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        if store.storage_options:  # in the environment, not the command line (`ps`)
            self.env["PROXAL_STORE_OPTIONS"] = ",".join(
                f"{k}={v}" for k, v in store.storage_options.items()
            )

    def start(self, index: int) -> None:
        slot = self.slots[index]
        command = _worker_command(
            self.store,
            self.version,
            self.pool,
            slot.span,
            self.batch_size,
            self.threads,
            self.settings,
        )
        slot.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=self.env)
        stdout = slot.process.stdout
        assert stdout is not None
        threading.Thread(
            target=self._read, args=(index, stdout), name=f"worker-{index}", daemon=True
        ).start()

    def _read(self, index: int, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put((index, line))
        self.lines.put((index, None))

    def ended(self, index: int) -> None:
        """Handle the end of slot `index`'s process: done, replaced, or the run fails."""
        slot = self.slots[index]
        assert slot.process is not None
        code = slot.process.wait()
        if code == 0:
            slot.finished = True
            return
        slot.failures += 1
        span = f"{slot.span[0]}:{slot.span[1]}"
        if slot.failures > WORKER_RETRIES:
            raise WorkersFailedError(
                f"the worker for ids {span} of run {self.pool}/{self.version} exited with "
                f"status {code}, {slot.failures} times; the run stays running and a restarted "
                "encoder service resumes it"
            )
        log.warning("worker for ids %s exited with status %d; starting a new one", span, code)
        self.start(index)

    def stop(self) -> None:
        """SIGKILL the workers still running (the run is failing or cancelled)."""
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()


def _drive(
    workers: _Workers, total: int, progress_cb: ProgressCallback | None, interval_s: float
) -> None:
    """Run the workers to the end, reporting the sum of their progress."""
    started = last = time.monotonic()

    def report(force: bool) -> None:
        nonlocal last
        now = time.monotonic()
        if progress_cb is None or (not force and now - last < interval_s):
            return
        last = now
        done = sum(s.done for s in workers.slots)
        rate = done / max(now - started, 1e-9)
        progress_cb(Progress(done, total, rate, (total - done) / rate if rate > 0 else 0.0))

    report(True)
    for index in range(len(workers.slots)):
        workers.start(index)
    while not all(s.finished for s in workers.slots):
        index, line = workers.lines.get()
        if line is None:
            workers.ended(index)
            continue
        try:
            workers.slots[index].done = int(json.loads(line)["done"])
        except (ValueError, KeyError, TypeError):
            log.info("worker %d: %s", index, line.rstrip())  # not a progress line
        report(False)
    report(True)


def fan_out(
    store: Store,
    pool: str,
    encoder: Encoder,
    workers: int,
    batch_size: int,
    settings: EncoderSettings,
    progress_cb: ProgressCallback | None = None,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> VersionInfo:
    """Embed every row of `pool` with `workers` processes and commit one new version.

    Progress is the sum over the ranges. An exception (e.g. raised by `progress_cb`) kills
    the workers and records the run failed, except WorkersFailedError (UNAVAILABLE), which
    leaves it running for recovery.
    """
    check_batch_size(batch_size)
    ids = store.pool_rows(pool, columns=["id"]).column("id").to_numpy()
    parts = check_workers(workers, len(ids), settings.max_embed_workers)
    writer = store.begin_embedding(pool, encoder_info(encoder))
    owner = f"{socket.gethostname()}:{os.getpid()}"
    try:
        with ClaimKeeper(store, pool, writer.version, owner, settings.claim_lease_s) as keeper:
            slots = []
            for span in split_ranges(ids, parts):
                keeper.claim(span)
                slots.append(_Slot(span))
            running = _Workers(store, pool, writer.version, batch_size, settings, slots)
            try:
                _drive(running, writer.expected_rows, progress_cb, progress_interval_s)
            finally:
                running.stop()
        return store.resume_embedding(pool, writer.version).commit()
    except WorkersFailedError:
        raise
    except BaseException:
        writer.abort()
        raise


# ------------------------------------------------------------------ the command line
def build_parser(env: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """`python -m proxal.encoder_service embed-begin | embed-range | embed-commit`."""
    env = dict(os.environ) if env is None else env
    parser = argparse.ArgumentParser(
        prog="proxal-encoder",
        description="embedding runs fanned out over processes or hosts sharing one store",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=env_default(PREFIX, "store", DEFAULT_STORE, env))
    common.add_argument(
        "--store-option",
        action="append",
        metavar="KEY=VALUE",
        default=[x for x in env.get("PROXAL_STORE_OPTIONS", "").split(",") if x],
    )
    common.add_argument("--pool", required=True)
    common.add_argument("--log-level", default=env_default(PREFIX, "log_level", "INFO", env))
    sub = parser.add_subparsers(dest="command", required=True)
    begin = sub.add_parser("embed-begin", parents=[common], help="begin a run; print its name")
    begin.add_argument("--model", default=DEFAULT_MODEL)
    begin.add_argument("--backend", default=TORCH, choices=BACKENDS)
    begin.add_argument("--max-length", type=int, default=128)
    begin.add_argument(
        "--precision", default=AUTO, help="fp32 | fp16 | bf16 | int8 | auto (the machine's default)"
    )
    begin.add_argument("--onnx-cache", default=DEFAULT_ONNX_CACHE)
    ranged = sub.add_parser("embed-range", parents=[common], help="embed one id range of a run")
    ranged.add_argument("--version", required=True, help="the running run, e.g. v3")
    ranged.add_argument("--ids", required=True, help="START:END, END exclusive")
    ranged.add_argument("--batch-size", type=int, default=64)
    ranged.add_argument("--write-chunk-rows", type=int, default=DEFAULT_WRITE_CHUNK_ROWS)
    ranged.add_argument("--onnx-cache", default=DEFAULT_ONNX_CACHE)
    ranged.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    ranged.add_argument("--lease-s", type=float, default=DEFAULT_CLAIM_LEASE_S)
    ranged.add_argument("--claim", action="store_true", help=argparse.SUPPRESS)
    ranged.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
    commit = sub.add_parser("embed-commit", parents=[common], help="commit a finished run")
    commit.add_argument("--version", required=True)
    return parser


def _begin(args: argparse.Namespace, store: Store) -> int:
    precision = resolve_precision(args.backend, args.precision, args.model).precision
    encoder = EncoderCache(Path(args.onnx_cache).expanduser()).get(
        args.model, args.backend, args.max_length, precision
    )
    writer = store.begin_embedding(args.pool, encoder_info(encoder))
    print(writer.version)
    return 0


def _commit(args: argparse.Namespace, store: Store) -> int:
    running_run(store, args.pool, args.version)
    if store.live_claims(args.pool, args.version):
        raise FailedPreconditionError(
            f"embedding run {args.pool}/{args.version} still has live workers; wait for them"
        )
    info = store.resume_embedding(args.pool, args.version).commit()
    print(f"{info.pool}/{info.version} complete: {info.row_count} rows")
    return 0


def main(argv: Sequence[str]) -> int:
    """Run one subcommand; bad input is one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    options = dict(item.partition("=")[::2] for item in args.store_option) or None
    commands = {"embed-begin": _begin, "embed-range": run_range, "embed-commit": _commit}
    try:
        store = Store(args.store, options, create=False)
        return commands[args.command](args, store)
    except ProxalError as exc:
        print(f"proxal-encoder {args.command}: {exc}", file=sys.stderr)
        return 2
