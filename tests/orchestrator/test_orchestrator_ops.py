"""The orchestrator's metrics and readiness on real servers: the orchestrator starts before
its proxy (NOT_SERVING), serves once the proxy does, and turns NOT_SERVING when it is lost."""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.rpc.servicer import start
from proxal.orchestrator_service.rpc.sharding import make_selector
from proxal.orchestrator_service.sessions.live import Sessions
from proxal.proxy_service.__main__ import start as start_proxy
from proxal.proxy_service.settings import ProxySettings
from proxal.runtime.server import ServerSettings
from proxal.store import Store

from tests.conftest import add_session_pool
from tests.ops import NOT_SERVING, SERVING, scrape, status, value, wait_for, watch

SERVICE = "proxal.orchestrator.v1.OrchestratorService"
CLASSES = ["a", "b", "c"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _labels(stub: pb_grpc.OrchestratorServiceStub, ids: list[int], gold: list[str]) -> int:
    reply = stub.SubmitLabels(
        pb.SubmitLabelsRequest(
            session="ops",
            labels=[pb.Label(id=i, label=gold[i]) for i in ids],
            request_id=uuid.uuid4().hex,
            annotator="ann",
        )
    )
    return int(reply.accepted)


def test_orchestrator_readiness_and_metrics(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    gold = add_session_pool(store, "blobs", CLASSES, 120)
    proxy_port = _free_port()
    selector = make_selector(f"127.0.0.1:{proxy_port}")
    settings = ServerSettings(port=0, metrics_port=0, readiness_recheck_s=0.1)
    running, servicer = start(settings, Sessions(store, selector), selector.replicas)
    channel = grpc.insecure_channel(running.address)
    proxy_settings = ProxySettings(server=ServerSettings(port=proxy_port), store=store.uri)
    proxy = None
    try:
        assert status(channel, SERVICE) == NOT_SERVING  # no proxy yet
        wait_for(channel, NOT_SERVING)
        assert "no proxy replica serves" in running.readiness.problem
        proxy = start_proxy(proxy_settings, Store(store.uri, create=False))
        wait_for(channel, SERVING, SERVICE)

        stub = pb_grpc.OrchestratorServiceStub(channel)
        stub.CreateSession(pb.CreateSessionRequest(session="ops", pool="blobs", batch_size=6))
        batch = stub.NextBatch(pb.NextBatchRequest(session="ops", annotator="ann"))
        ids = [item.id for item in batch.items]
        assert _labels(stub, ids[:4], gold) == 4
        stub.Skip(
            pb.SkipRequest(
                session="ops", ids=ids[4:5], request_id=uuid.uuid4().hex, annotator="ann"
            )
        )
        with pytest.raises(grpc.RpcError) as failed:
            stub.NextBatch(pb.NextBatchRequest(session="nope", annotator="ann"))
        assert failed.value.code() is grpc.StatusCode.NOT_FOUND

        assert running.metrics_port
        samples = scrape(running.metrics_port)
        acknowledged = "proxal_orchestrator_labels_acknowledged_total"
        assert value(samples, acknowledged, kind="label") == 4
        assert value(samples, acknowledged, kind="skip") == 1
        assert value(samples, "proxal_orchestrator_sessions") == 1
        assert value(samples, "proxal_orchestrator_leases_open") == 1
        rpc = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "NextBatch"}
        handled = "grpc_server_handled_total"
        assert value(samples, handled, **rpc, grpc_code="OK") == 1
        assert value(samples, handled, **rpc, grpc_code="NOT_FOUND") == 1

        proxy.stop(0)  # the proxy is lost: the periodic check notices
        proxy = None
        wait_for(channel, NOT_SERVING, SERVICE)

        statuses = watch(channel, SERVICE)
        assert next(statuses).status == NOT_SERVING
        proxy = start_proxy(proxy_settings, Store(store.uri, create=False))
        assert next(statuses).status == SERVING  # back once a replica serves again
        stopping = threading.Thread(target=running.stop, args=(10,))
        stopping.start()
        assert next(statuses).status == NOT_SERVING  # before the drain ends: Watch is in flight
        statuses.cancel()
        stopping.join(timeout=20)
        assert not stopping.is_alive()
    finally:
        channel.close()
        running.stop(0)
        servicer.close()
        selector.close()
        if proxy is not None:
            proxy.stop(0)
