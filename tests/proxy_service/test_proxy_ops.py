"""The proxy's metrics and readiness, on a real server (`proxy_service.__main__.start`)."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.__main__ import start
from proxal.proxy_service.servicer import SERVICE_NAME
from proxal.proxy_service.settings import ProxySettings
from proxal.runtime import healthcheck
from proxal.runtime.arrays import pack_int32, pack_int64
from proxal.runtime.server import ServerSettings
from proxal.store import Store

from tests.conftest import add_session_pool
from tests.ops import NOT_SERVING, SERVING, scrape, status, value, wait_for, watch

CLASSES = ["a", "b", "c"]
N, DIM = 200, 16


def _select(version: str, labels: list[str], pool: str = "blobs") -> proxy_pb2.SelectRequest:
    ids = list(range(30))
    training = proxy_pb2.TrainingSet(
        ids=common_pb2.Int64Array(data=pack_int64(ids)),
        labels=common_pb2.Int32Array(data=pack_int32([CLASSES.index(labels[i]) for i in ids])),
        num_classes=len(CLASSES),
    )
    return proxy_pb2.SelectRequest(
        pool=pool, embedding_version=version, training=training, strategy="margin", k=5, seed=1
    )


def test_proxy_readiness_and_metrics(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(str(root))
    labels = add_session_pool(store, "blobs", CLASSES, N, 0, DIM)
    away = tmp_path / "not-mounted-yet"
    root.rename(away)  # the store's volume is not there yet when the proxy starts
    settings = ProxySettings(
        server=ServerSettings(port=0, metrics_port=0, readiness_recheck_s=0.1), store=str(root)
    )
    running = start(settings, store)
    channel = grpc.insecure_channel(running.address)
    try:
        assert status(channel) == NOT_SERVING and status(channel, SERVICE_NAME) == NOT_SERVING
        serving, said = healthcheck.check(f"127.0.0.1:{running.port}", SERVICE_NAME)
        assert not serving and said == "NOT_SERVING"
        assert "cannot be read" in running.readiness.problem
        away.rename(root)
        wait_for(channel, SERVING, SERVICE_NAME)
        assert healthcheck.check(f"127.0.0.1:{running.port}") == (True, "SERVING")

        stub = proxy_pb2_grpc.ProxyServiceStub(channel)
        assert len(stub.Select(_select("v1", labels)).timings.ListFields()) > 0
        stub.Select(_select("v1", labels))
        with pytest.raises(grpc.RpcError) as failed:
            stub.Select(_select("v1", labels, pool="nope"))
        assert failed.value.code() is grpc.StatusCode.NOT_FOUND
        assert running.metrics_port
        samples = scrape(running.metrics_port)
        rpc = {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": "Select"}
        assert value(samples, "grpc_server_handled_total", **rpc, grpc_code="OK") == 2
        assert value(samples, "grpc_server_handled_total", **rpc, grpc_code="NOT_FOUND") == 1
        assert value(samples, "grpc_server_handling_seconds_count", **rpc) == 3
        assert value(samples, "proxal_proxy_versions_loaded") == 1
        assert value(samples, "proxal_proxy_versions_loaded_bytes") == N * (8 + 4 * DIM)
        assert value(samples, "proxal_proxy_models_cached") == 1
        stage = "proxal_proxy_stage_seconds_count"
        assert value(samples, stage, method="Select", stage="load") >= 1  # cache lookups count
        assert value(samples, stage, method="Select", stage="fit") >= 1
        assert value(samples, stage, method="Select", stage="score") == 2

        statuses = watch(channel, SERVICE_NAME)
        assert next(statuses).status == SERVING
        stopping = threading.Thread(target=running.stop, args=(10,))
        stopping.start()
        assert next(statuses).status == NOT_SERVING  # before the drain ends: Watch is in flight
        statuses.cancel()
        stopping.join(timeout=20)
        assert not stopping.is_alive()
    finally:
        channel.close()
        running.stop(0)
