"""The encoder's metrics and readiness, on a real server (`encoder_service.__main__.start`)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import pytest
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.encoder_service.__main__ import start
from proxal.encoder_service.encoders import EncoderCache
from proxal.encoder_service.servicer import SERVICE_NAME
from proxal.encoder_service.settings import EncoderSettings
from proxal.runtime.server import ServerSettings, grpc_channel_options
from proxal.store import Store

from tests.ops import NOT_SERVING, SERVING, scrape, status, value, wait_for, watch

ROWS = 40


def test_encoder_readiness_and_metrics(
    tmp_path: Path, encoders: EncoderCache, banking_rows: list[dict[str, str]]
) -> None:
    root = tmp_path / "store"
    store = Store(str(root))
    away = tmp_path / "not-mounted-yet"
    root.rename(away)  # the store's volume is not there yet when the encoder starts
    settings = EncoderSettings(
        server=ServerSettings(port=0, metrics_port=0, readiness_recheck_s=0.1),
        store=str(root),
        onnx_cache=encoders.onnx_cache_dir,
    )
    running = start(settings, store, encoders)
    channel = grpc.insecure_channel(running.address, options=grpc_channel_options())
    try:
        assert status(channel, SERVICE_NAME) == NOT_SERVING and status(channel) == NOT_SERVING
        assert "cannot be read" in running.readiness.problem
        away.rename(root)
        wait_for(channel, SERVING, SERVICE_NAME)  # the store answers and the model is loaded
        assert running.readiness.problem == ""

        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        data = "".join(json.dumps(row) + "\n" for row in banking_rows[:ROWS]).encode()
        header = encoder_pb2.PoolHeader(pool="ops", split="train")
        stub.IngestPool(iter([encoder_pb2.IngestPoolChunk(header=header, data=data)]), timeout=60)
        progress = list(stub.EmbedPool(encoder_pb2.EmbedPoolRequest(pool="ops"), timeout=300))
        assert progress[-1].version.version == "v1"
        with pytest.raises(grpc.RpcError) as failed:
            list(stub.EmbedPool(encoder_pb2.EmbedPoolRequest(pool="never"), timeout=60))
        assert failed.value.code() is grpc.StatusCode.NOT_FOUND

        assert running.metrics_port
        samples = scrape(running.metrics_port)
        assert value(samples, "proxal_encoder_texts_embedded_total", pool="ops") == ROWS
        assert value(samples, "proxal_encoder_run_progress_ratio", pool="ops") == 1
        assert value(samples, "proxal_encoder_runs_in_progress") == 0
        embed = {"grpc_type": "server_stream", "grpc_service": SERVICE_NAME}
        handled = "grpc_server_handled_total"
        assert value(samples, handled, **embed, grpc_method="EmbedPool", grpc_code="OK") == 1
        assert value(samples, handled, **embed, grpc_method="EmbedPool", grpc_code="NOT_FOUND") == 1
        ingest = {"grpc_type": "client_stream", "grpc_service": SERVICE_NAME}
        assert value(samples, handled, **ingest, grpc_method="IngestPool", grpc_code="OK") == 1

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
