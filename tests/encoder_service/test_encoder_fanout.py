"""Fan-out: one embedding run over several real worker subprocesses, one commit.

Real parts throughout: worker subprocesses (`python -m proxal.encoder_service embed-range`),
SIGKILL, the real MiniLM-L6, a LanceDB store on tmp_path, a gRPC server on port 0.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import lance
import numpy as np
import numpy.typing as npt
import pytest
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.encoder_service.encoders import DEFAULT_MODEL, TORCH, EncoderCache
from proxal.encoder_service.fanout import (
    WorkersFailedError,
    check_workers,
    fan_out,
    parse_ids,
    split_ranges,
)
from proxal.encoder_service.pipeline import Progress, embed_pool
from proxal.encoder_service.servicer import DEFAULT_MAX_LENGTH
from proxal.encoder_service.settings import EncoderSettings, parse_settings
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from proxal.store import EncoderInfo, Store, pools
from proxal.store.local_s3 import moto_s3

from tests.conftest import BANKING77, read_jsonl
from tests.encoder_service.conftest import EncoderServer, Upload, jsonl

ENCODER = [sys.executable, "-m", "proxal.encoder_service"]


def _texts(rows: int, offset: int = 0) -> list[str]:
    return [r["text"] for r in read_jsonl(BANKING77 / "train.jsonl")[offset::5][:rows]]


def _until(done: Callable[[], bool], timeout: float) -> None:
    """Poll `done` until it holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not done after {timeout} s"
        time.sleep(0.2)


def _store(tmp_path: Path, texts: list[str], pool: str = "fan") -> Store:
    store = Store(str(tmp_path / "store"))
    store.add_pool_rows(pool, "train", texts, [None] * len(texts))
    return store


# ------------------------------------------------------------------ ranges and claims
def test_ranges_are_disjoint_cover_every_id_and_bad_counts_are_refused() -> None:
    ids = np.array([0, 1, 2, 5, 6, 9, 10], dtype=np.int64)  # ids need not be contiguous
    spans = split_ranges(ids, 3)
    assert spans == [(0, 2), (2, 6), (6, 11)]
    covered = [int(i) for i in ids for s, e in spans if s <= i < e]
    assert covered == ids.tolist()  # each id in exactly one range
    assert check_workers(0, 7, 4) == check_workers(1, 7, 4) == 1
    for workers, cap, message in [(-1, 4, ">= 0"), (8, 16, "more than"), (5, 4, "cap of 4")]:
        with pytest.raises(InvalidArgumentError, match=message):
            check_workers(workers, 7, cap)
    assert parse_ids("10:20") == (10, 20)
    for bad in ["10", "20:10", "a:b", "-1:5", "3:3"]:
        with pytest.raises(InvalidArgumentError, match="START:END"):
            parse_ids(bad)


def test_an_overlapping_claim_is_refused_and_leaves_the_first_one_live(tmp_path: Path) -> None:
    store = _store(tmp_path, _texts(20))
    with pytest.raises(NotFoundError, match="not found"):
        store.claim_range("fan", "v1", 0, 10, "w0", 30.0)
    run = store.begin_embedding("fan", _info())
    first = store.claim_range("fan", run.version, 0, 10, "host-a:1", 30.0)
    with pytest.raises(FailedPreconditionError, match=r"overlap ids 0:10, claimed by .*host-a:1"):
        store.claim_range("fan", run.version, 5, 15, "host-b:2", 30.0)
    assert [(c.claim, c.start, c.end) for c in store.live_claims("fan", run.version)] == [
        (first, 0, 10)
    ]  # the refused claim was withdrawn; the first is unaffected
    second = store.claim_range("fan", run.version, 10, 20, "host-b:2", 30.0)  # disjoint: fine
    store.release_claims("fan", run.version, [first])
    store.claim_range("fan", run.version, 0, 5, "host-c:3", 30.0)  # released: free again
    expired = store.claim_range("fan", run.version, 20, 30, "gone:4", 0.0)  # a lease already over
    store.claim_range("fan", run.version, 25, 26, "host-d:5", 30.0)
    live = {c.claim for c in store.live_claims("fan", run.version)}
    assert second in live and first not in live and expired not in live


def test_racing_overlapping_claims_admit_exactly_one(tmp_path: Path) -> None:
    """Eight claimants race for overlapping ranges, each through its own Store: the claim
    committed first wins, every other one is refused."""
    store = _store(tmp_path, _texts(20))
    version = store.begin_embedding("fan", _info()).version
    won: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(8)

    def claim(index: int) -> None:
        own = Store(store.uri)
        start.wait()
        try:
            won.append(own.claim_range("fan", version, index, index + 10, f"w{index}", 30.0))
        except FailedPreconditionError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7
    assert [c.claim for c in store.live_claims("fan", version)] == won


def _info() -> EncoderInfo:
    return EncoderInfo(
        model_id=DEFAULT_MODEL,
        backend=TORCH,
        dim=384,
        max_length=DEFAULT_MAX_LENGTH,
        pooling="mean",
        checkpoint_hash="test",
    )


# ------------------------------------------------------------------ over gRPC
GRPC_ROWS = 48


def test_embed_pool_with_two_workers_over_grpc_commits_one_complete_version(
    encoder_server: EncoderServer, upload: Upload, encoders: EncoderCache
) -> None:
    texts = _texts(GRPC_ROWS, offset=3)
    upload("fanrpc", jsonl([{"text": t} for t in texts]))
    stub = encoder_server.stub
    for workers, message in [(-1, ">= 0"), (GRPC_ROWS + 1, "more than"), (3, "cap of 2")]:
        request = encoder_pb2.EmbedPoolRequest(pool="fanrpc", workers=workers)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.EmbedPool(request, timeout=60))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in (refused.value.details() or "")
    request = encoder_pb2.EmbedPoolRequest(pool="fanrpc", workers=2, batch_size=8)
    updates = list(stub.EmbedPool(request, timeout=240))
    final = updates[-1].version
    assert (final.version, final.status, final.row_count) == ("v1", "complete", GRPC_ROWS)
    assert [u.rows_done for u in updates] == sorted(u.rows_done for u in updates)
    assert all(u.rows_total == GRPC_ROWS for u in updates)
    ids, vectors = encoder_server.store.read_embeddings("fanrpc", "v1")
    assert ids.tolist() == list(range(GRPC_ROWS))
    encoder = encoders.get(DEFAULT_MODEL, TORCH, DEFAULT_MAX_LENGTH)
    expected, _ = encoder.encode(texts)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert encoder_server.store.live_claims("fanrpc", "v1") == []  # released at the end


# ------------------------------------------------------------------ a worker SIGKILLed
KILL_ROWS, KILL_CHUNK, KILL_BATCH = 600, 50, 8


def _worker_pids(parent: int | None = None) -> dict[str, int]:
    """The embed-range children of `parent` (default: this process): {"START:END": pid}."""
    parent = os.getpid() if parent is None else parent
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == parent and "embed-range" in argv:
            found[argv[argv.index("--ids") + 1]] = int(entry.name)
    return found


@pytest.mark.slow
def test_a_sigkilled_worker_is_replaced_and_the_version_equals_a_single_process_run(
    tmp_path: Path, encoders: EncoderCache, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path, _texts(KILL_ROWS))
    settings = EncoderSettings(
        store=store.uri, write_chunk_rows=KILL_CHUNK, max_embed_workers=3, claim_lease_s=10.0
    )
    encoder = encoders.get(DEFAULT_MODEL, TORCH, DEFAULT_MAX_LENGTH)
    killed: list[str] = []

    def kill_one(progress: Progress) -> None:
        """SIGKILL the middle range's worker once the run is a quarter done."""
        if not killed and progress.rows_done >= KILL_ROWS // 4:
            victim = _worker_pids()["200:400"]
            os.kill(victim, signal.SIGKILL)
            killed.append(f"{victim} at {progress.rows_done} rows")

    caplog.set_level(logging.WARNING, "proxal.encoder_service.fanout")
    fanned = fan_out(store, "fan", encoder, 3, KILL_BATCH, settings, kill_one, 0.0)
    assert killed, "no worker was killed"
    assert "worker for ids 200:400 exited with status -9" in caplog.text
    uri = f"{store.uri}/embeddings__fan.lance"
    assert len(lance.dataset(uri).versions()) == 1  # committed once, as one table version
    single = embed_pool(store, "fan", encoder, KILL_BATCH, chunk_rows=KILL_CHUNK)

    runs = store.list_versions("fan", include_incomplete=True)
    assert [(v.version, v.status, v.row_count) for v in runs] == [
        ("v1", "complete", KILL_ROWS),
        ("v2", "complete", KILL_ROWS),
    ]
    lineage = ("model_id", "backend", "precision", "checkpoint_hash", "dim", "max_length")
    assert [getattr(fanned, f) for f in lineage] == [getattr(single, f) for f in lineage]
    ids_fanned, fanned_vectors = store.read_embeddings("fan", fanned.version)
    ids_single, single_vectors = store.read_embeddings("fan", single.version)
    assert ids_fanned.tolist() == ids_single.tolist() == list(range(KILL_ROWS))
    np.testing.assert_allclose(fanned_vectors, single_vectors, atol=1e-5)
    cosine = np.einsum("ij,ij->i", fanned_vectors, single_vectors) / (
        np.linalg.norm(fanned_vectors, axis=1) * np.linalg.norm(single_vectors, axis=1)
    )
    assert cosine.min() >= 0.99999
    assert store.live_claims("fan", fanned.version) == []


# ------------------------------------------------------------------ the command line
CLI_ROWS = 80


def _cli(store: Store, *args: str) -> list[str]:
    return [*ENCODER, args[0], "--store", store.uri, "--pool", "fan", *args[1:]]


@pytest.mark.slow
def test_cli_workers_on_one_run_and_an_overlapping_range_is_refused(tmp_path: Path) -> None:
    """embed-begin, then one embed-range worker per half as another host would run them;
    a third worker given a range overlapping a live one is refused (one line, exit 2)
    and the first worker goes on unaffected; embed-commit makes one complete version."""
    store = _store(tmp_path, _texts(CLI_ROWS))
    begun = subprocess.run(_cli(store, "embed-begin"), capture_output=True, text=True, check=True)
    version = begun.stdout.strip()
    assert version == "v1"
    first = subprocess.Popen(
        _cli(store, "embed-range", "--version", version, "--ids", "0:40", "--lease-s", "120"),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None
    assert '"done"' in first.stdout.readline()  # claimed, model loaded, embedding
    first.send_signal(signal.SIGSTOP)  # held mid-range (its claim stays live) until SIGCONT
    overlapping = _cli(store, "embed-range", "--version", version, "--ids", "30:60")
    refused = subprocess.run(overlapping, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "ids 30:60" in refused.stderr and "overlap ids 0:40" in refused.stderr
    early = subprocess.run(
        _cli(store, "embed-commit", "--version", version), capture_output=True, text=True
    )
    assert early.returncode == 2 and "live workers" in early.stderr
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=120) == 0  # unaffected by the refused one
    assert first.stdout.read().splitlines()[-1] == '{"done": 40, "rows": 40}'
    second = _cli(store, "embed-range", "--version", version, "--ids", "40:80")
    subprocess.run(second, capture_output=True, check=True, timeout=120)
    done = subprocess.run(
        _cli(store, "embed-commit", "--version", version), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert store.get_version("fan", version).row_count == CLI_ROWS
    ids, _ = store.read_embeddings("fan", version)
    assert ids.tolist() == list(range(CLI_ROWS))


@pytest.mark.slow
def test_a_sigkilled_coordinator_takes_its_workers_along_and_recovery_finishes_the_run(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path, _texts(KILL_ROWS))
    args = ["--write-chunk-rows", str(KILL_CHUNK), "--claim-lease-s", "5"]
    log = tmp_path / "encoder.log"
    with ServiceProcess("encoder_service", store.uri, args, log_path=log) as server:
        assert server.process is not None
        stub = encoder_pb2_grpc.EncoderServiceStub(grpc.insecure_channel(server.address))
        request = encoder_pb2.EmbedPoolRequest(pool="fan", workers=2, batch_size=KILL_BATCH)
        for progress in stub.EmbedPool(request, timeout=300):
            if progress.rows_done >= KILL_ROWS // 4:
                workers = _worker_pids(server.process.pid)
                server.process.kill()  # the coordinator dies mid-run; no cleanup runs
                server.process.wait()
                break
    assert sorted(workers) == ["0:300", "300:600"]
    _until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers.values()), 15)
    assert [(v.version, v.status) for v in store.list_versions("fan", True)] == [("v1", "running")]
    with ServiceProcess("encoder_service", store.uri, args, log_path=log):
        _until(lambda: bool(store.list_versions("fan")), 240)
    assert "resuming embedding run fan/v1" in log.read_text()
    ids, _ = store.read_embeddings("fan", "v1")
    assert ids.tolist() == list(range(KILL_ROWS))


class _UnloadableEncoder:
    """Describes a model no worker can load (each exits 2 at once); never encodes."""

    model_id, backend, precision = "no-such-model", TORCH, "fp32"
    dim, max_length, checkpoint_hash = 384, DEFAULT_MAX_LENGTH, "none"

    def encode(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], int]:
        raise AssertionError("the coordinator never encodes")


@pytest.mark.slow
def test_workers_that_keep_dying_fail_the_call_and_leave_the_run_resumable(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path, _texts(20))
    settings = EncoderSettings(store=store.uri, max_embed_workers=2, claim_lease_s=10.0)
    with pytest.raises(WorkersFailedError, match=r"exited with status 2, 3 times"):
        fan_out(store, "fan", _UnloadableEncoder(), 2, 8, settings)
    runs = store.list_versions("fan", include_incomplete=True)
    assert [(v.version, v.status) for v in runs] == [("v1", "running")]  # resumable
    assert store.live_claims("fan", "v1") == []
    assert _worker_pids() == {}  # the other range's worker was stopped too


def test_fanout_settings_and_a_bad_range_on_the_command_line(tmp_path: Path) -> None:
    settings = parse_settings(["--max-embed-workers", "3", "--claim-lease-s", "5"], env={})
    assert (settings.max_embed_workers, settings.claim_lease_s) == (3, 5.0)
    assert parse_settings([], env={"PROXAL_ENCODER_MAX_EMBED_WORKERS": "6"}).max_embed_workers == 6
    with pytest.raises(SystemExit):
        parse_settings(["--max-embed-workers", "0"], env={})
    store = _store(tmp_path, _texts(10))
    version = store.begin_embedding("fan", _info()).version
    bad = _cli(store, "embed-range", "--version", version, "--ids", "9:3")
    refused = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "proxal-encoder embed-range: ids must be START:END with 0 <= START < END "
        "(END exclusive), got '9:3'"
    ]
    assert store.live_claims("fan", version) == []  # refused before claiming anything


def test_workers_on_an_s3_store_write_one_run_concurrently_and_commit_once() -> None:
    """Two writers (own Store objects, as two hosts) append their ranges' chunks and
    claims to one run on S3 (moto) at once; the run commits once with every id."""
    with moto_s3("fanout") as server:
        uri = "s3://fanout/store"
        store = Store(uri, storage_options=server.options)
        store.add_pool_rows("fan", "train", [f"t{i}" for i in range(40)], [None] * 40)
        version = store.begin_embedding("fan", _info()).version
        vectors = np.random.default_rng(0).normal(size=(40, 384)).astype(np.float32)
        errors: list[BaseException] = []

        def worker(span: tuple[int, int]) -> None:
            own = Store(uri, storage_options=server.options)
            try:
                claim = own.claim_range("fan", version, *span, f"host{span[0]}", 30.0)
                writer = own.resume_embedding("fan", version)
                for start in range(span[0], span[1], 5):
                    writer.write(np.arange(start, start + 5), vectors[start : start + 5])
                own.renew_claims("fan", version, {claim: span}, f"host{span[0]}", 30.0)
                own.release_claims("fan", version, [claim])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(s,)) for s in [(0, 20), (20, 40)]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        info = store.resume_embedding("fan", version).commit()
        assert (info.status, info.row_count) == ("complete", 40)
        ids, read = store.read_embeddings("fan", version)
        assert ids.tolist() == list(range(40))
        np.testing.assert_array_equal(read, vectors)
        assert store.live_claims("fan", version) == []


def test_the_claims_table_is_compacted_and_keeps_live_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pools, "CLAIMS_COMPACT_FRAGMENTS", 6)
    store = _store(tmp_path, _texts(20))
    version = store.begin_embedding("fan", _info()).version
    kept = store.claim_range("fan", version, 0, 10, "keeper", 30.0)
    for _ in range(3):
        store.renew_claims("fan", version, {kept: (0, 10)}, "keeper", 30.0)
    done = store.claim_range("fan", version, 10, 20, "done", 30.0)
    store.release_claims("fan", version, [done])  # the 7th append: compacts
    claims = lance.dataset(f"{store.uri}/{pools.CLAIMS_TABLE}.lance")
    assert len(claims.get_fragments()) == 1
    assert [(c.claim, c.start, c.end) for c in store.live_claims("fan", version)] == [(kept, 0, 10)]
