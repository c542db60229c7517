"""A killed embedding run resumes on restart and equals an uninterrupted run.

Real encoder subprocesses (SIGKILL, not a simulated crash), real store, real MiniLM-L6.
While runs are killed at random points and resumed, a reader thread keeps reading the
store as the proxy does: it must never see a version that is not complete.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.encoder_service.encoders import DEFAULT_MODEL, TORCH, EncoderCache
from proxal.encoder_service.pipeline import encode_bucketed, encoder_info
from proxal.encoder_service.recovery import resume_interrupted
from proxal.encoder_service.servicer import DEFAULT_MAX_LENGTH
from proxal.encoder_service.settings import EncoderSettings
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.store import Store

from tests.conftest import BANKING77, read_jsonl

ROWS, CHUNK = 900, 100


def _wait_complete(store: Store, pool: str, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while version not in {v.version for v in store.list_versions(pool)}:
        assert time.monotonic() < deadline, (
            f"{pool}/{version} not complete after {timeout}s: "
            f"{store.list_versions(pool, include_incomplete=True)}"
        )
        time.sleep(0.5)


def test_sigkilled_run_resumes_to_the_same_vectors(tmp_path: Path) -> None:
    rows = read_jsonl(BANKING77 / "train.jsonl")[::10][:ROWS]
    store = Store(str(tmp_path / "store"))
    store.add_pool_rows("crash", "train", [r["text"] for r in rows], [r["label"] for r in rows])
    args = ["--write-chunk-rows", str(CHUNK)]
    log = tmp_path / "encoder.log"

    with ServiceProcess("encoder_service", store.uri, args, log_path=log) as encoder:
        stub = encoder_pb2_grpc.EncoderServiceStub(grpc.insecure_channel(encoder.address))
        request = encoder_pb2.EmbedPoolRequest(pool="crash", batch_size=16)
        for progress in stub.EmbedPool(request, timeout=300):
            if progress.rows_done >= 3 * CHUNK:
                assert encoder.process is not None
                encoder.process.kill()  # SIGKILL mid-run: no cleanup runs in the server
                encoder.process.wait()
                break

    # the partial run is recorded running, and no reader can see it as a version
    runs = store.list_versions("crash", include_incomplete=True)
    assert [(v.version, v.status) for v in runs] == [("v1", "running")]
    assert store.list_versions("crash") == []

    with ServiceProcess("encoder_service", store.uri, args, log_path=log) as encoder:
        _wait_complete(store, "crash", "v1", timeout=240)  # resumed by the restarted server
        stub = encoder_pb2_grpc.EncoderServiceStub(grpc.insecure_channel(encoder.address))
        final = list(
            stub.EmbedPool(encoder_pb2.EmbedPoolRequest(pool="crash", batch_size=16), timeout=300)
        )[-1]
        assert final.version.version == "v2"

    assert "resuming embedding run crash/v1" in log.read_text()
    ids_resumed, resumed = store.read_embeddings("crash", "v1")
    ids_clean, clean = store.read_embeddings("crash", "v2")
    assert ids_resumed.tolist() == list(range(ROWS))  # every id exactly once
    assert ids_clean.tolist() == list(range(ROWS))
    np.testing.assert_allclose(resumed, clean, atol=1e-5)
    assert store.get_version("crash", "v1").row_count == ROWS


# ------------------------------------------------------------------ random kill points
KILL_POOL, KILL_ROWS, KILL_CHUNK, KILL_BATCH = "kills", 300, 50, 16
RUNS = 3
SETTLE_TIMEOUT_S = 240.0


class Reader(threading.Thread):
    """Reads `pool` as a proxy replica would, every `interval` seconds, until stopped;
    `problems` lists every partial or unreadable version it saw."""

    def __init__(self, store: Store, pool: str, rows: int, interval: float = 0.2):
        super().__init__(name="reader", daemon=True)
        self.store, self.pool, self.rows, self.interval = store, pool, rows, interval
        self.problems: list[str] = []
        self.reads = 0
        self.stopped = threading.Event()

    def check(self) -> None:
        versions = self.store.list_versions(self.pool)
        partial = [v for v in versions if v.status != "complete" or v.row_count != self.rows]
        if partial:
            self.problems.append(f"list_versions shows partial versions: {partial}")
        if not versions:
            return
        latest = self.store.latest_version(self.pool)
        ids, vectors = self.store.read_embeddings(self.pool, latest.version)
        if not np.array_equal(ids, np.arange(self.rows)) or not np.isfinite(vectors).all():
            self.problems.append(f"latest version {latest.version} holds ids {ids[:10]}...")
        self.reads += 1

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # a reader must never fail either
                self.problems.append(f"{type(exc).__name__}: {exc}")


@pytest.fixture(scope="module")
def kill_texts() -> list[str]:
    return [row["text"] for row in read_jsonl(BANKING77 / "train.jsonl")[1::7][:KILL_ROWS]]


@pytest.fixture(scope="module")
def uninterrupted(encoders: EncoderCache, kill_texts: list[str]) -> npt.NDArray[np.float32]:
    """The pool's vectors (KILL_ROWS, 384) from one uninterrupted in-process run."""
    encoder = encoders.get(DEFAULT_MODEL, TORCH, DEFAULT_MAX_LENGTH)
    vectors, _ = encode_bucketed(encoder, kill_texts, KILL_BATCH)
    return vectors


def _settle(store: Store, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until the restarted encoder has finished every run left running."""
    deadline = time.monotonic() + timeout
    while store.interrupted_runs():
        assert time.monotonic() < deadline, f"runs still running after {timeout}s"
        time.sleep(0.3)


def _embed_and_kill(encoder: ServiceProcess, rng: random.Random) -> str:
    """Start an EmbedPool run and SIGKILL the encoder at a random point: once `target` rows
    are reported done, plus up to 0.4 s (mid-batch, mid-chunk, mid-commit, or after the run
    completed). Returns where the stream was when the process died."""
    target, extra = rng.randrange(KILL_ROWS), rng.uniform(0.0, 0.4)
    process = encoder.process
    assert process is not None
    killer = threading.Timer(extra, process.kill)
    seen = "no progress"
    channel = grpc.insecure_channel(encoder.address)
    request = encoder_pb2.EmbedPoolRequest(pool=KILL_POOL, batch_size=KILL_BATCH)
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    try:
        for progress in stub.EmbedPool(request, timeout=300):
            seen = f"{progress.rows_done}/{progress.rows_total} rows"
            if progress.HasField("version"):
                seen = f"complete ({progress.version.version})"
            if progress.rows_done >= target and not killer.ident:
                killer.start()  # the stream stays open: the run is not cancelled
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.UNAVAILABLE, exc  # the server died
    if not killer.ident:
        killer.start()
    killer.join()
    process.wait()
    channel.close()
    return f"killed at {seen} (+{extra:.2f} s past {target} rows)"


def _runs(store: Store) -> Iterator[tuple[str, str]]:
    for version in store.list_versions(KILL_POOL, include_incomplete=True):
        yield version.version, version.status


@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_runs_killed_at_random_points_never_show_a_partial_version(
    tmp_path: Path, kill_texts: list[str], uninterrupted: npt.NDArray[np.float32], seed: int
) -> None:
    """Three runs, each SIGKILLed at a seeded random point (and, one time in two, killed
    again while the restarted encoder resumes it). After every restart each run is either
    complete or was never begun; readers never see anything else; every complete version
    equals an uninterrupted run."""
    rng = random.Random(seed)
    store = Store(str(tmp_path / "store"))
    store.add_pool_rows(KILL_POOL, "train", kill_texts, [None] * KILL_ROWS)
    args = ["--write-chunk-rows", str(KILL_CHUNK)]
    log = tmp_path / "encoder.log"
    reader = Reader(store, KILL_POOL, KILL_ROWS)
    reader.start()
    kills: list[str] = []
    encoder = ServiceProcess("encoder_service", store.uri, args, log_path=log).start()
    try:
        for _ in range(RUNS):
            kills.append(_embed_and_kill(encoder, rng))
            encoder = ServiceProcess("encoder_service", store.uri, args, log_path=log).start()
            if rng.random() < 0.5 and store.interrupted_runs():  # kill the resume, too
                time.sleep(rng.uniform(0.0, 2.0))
                assert encoder.process is not None
                encoder.process.kill()
                encoder.process.wait()
                kills.append("killed while resuming")
                encoder = ServiceProcess("encoder_service", store.uri, args, log_path=log).start()
            _settle(store)
            assert all(status == "complete" for _, status in _runs(store)), (
                kills,
                list(_runs(store)),
            )
    finally:
        encoder.stop()
        reader.stopped.set()
        reader.join()
    print(kills)  # shown with -rP: where each run died
    assert reader.reads > 0 and not reader.problems, reader.problems[:5]
    versions = store.list_versions(KILL_POOL)
    assert len(versions) == RUNS, kills  # the first progress comes once the run has begun
    for version in versions:
        ids, vectors = store.read_embeddings(KILL_POOL, version.version)
        assert ids.tolist() == list(range(KILL_ROWS))  # every id exactly once
        np.testing.assert_allclose(vectors, uninterrupted, atol=1e-5, err_msg=str(kills))


def test_a_run_killed_between_its_commit_and_its_record_resumes_complete(
    tmp_path: Path, encoders: EncoderCache, kill_texts: list[str]
) -> None:
    """The narrowest kill point, reached on purpose: the embedding table is committed and
    tagged, the versions table still says running. The restart must finish the run."""
    store = Store(str(tmp_path / "store"))
    texts = kill_texts[:20]
    store.add_pool_rows(KILL_POOL, "train", texts, [None] * len(texts))
    encoder = encoders.get(DEFAULT_MODEL, TORCH, DEFAULT_MAX_LENGTH)
    writer = store.begin_embedding(KILL_POOL, encoder_info(encoder))
    vectors, truncated = encode_bucketed(encoder, texts, KILL_BATCH)
    writer.write(np.arange(len(texts)), vectors, truncated)
    store._commit_embeddings(KILL_POOL, encoder.dim, writer._fragments, writer.version)
    # ... and the process dies here, before writer.commit() records the run complete.
    settings = EncoderSettings(store=store.uri, onnx_cache=encoders.onnx_cache_dir)
    resumed = resume_interrupted(store, settings)
    assert [v.version for v in resumed] == [writer.version]
    assert store.get_version(KILL_POOL, writer.version).row_count == len(texts)
