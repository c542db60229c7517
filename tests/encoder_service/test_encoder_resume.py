"""A killed embedding run resumes on restart and equals an uninterrupted run.

Real encoder subprocesses (SIGKILL, not a simulated crash), real store, real MiniLM-L6.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc

from orchestrator.processes import ServiceProcess
from proxal_store import Store
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
