"""`python -m proxal.runtime.healthcheck` against a real server from proxal.runtime.server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from proxal.runtime import healthcheck
from proxal.runtime.server import RunningServer, ServerSettings, start_server

REPO = Path(__file__).resolve().parents[2]
SERVICE = "test.Health"


@pytest.fixture()
def server() -> Iterator[RunningServer]:
    generic = grpc.method_handlers_generic_handler(SERVICE, {})
    running = start_server(
        ServerSettings(port=0), lambda s: s.add_generic_rpc_handlers([generic]), [SERVICE]
    )
    yield running
    running.stop(0)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "protos")])
    return subprocess.run(
        [sys.executable, "-m", "proxal.runtime.healthcheck", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_cli_exits_0_when_serving_and_1_when_not(server: RunningServer) -> None:
    ok = _run_cli(server.address, SERVICE)
    assert ok.returncode == 0, ok.stderr
    assert "SERVING" in ok.stdout
    server.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    bad = _run_cli(server.address, SERVICE, "--timeout", "2")
    assert bad.returncode == 1
    assert "NOT_SERVING" in bad.stderr


def test_whole_server_and_unknown_service(server: RunningServer) -> None:
    assert healthcheck.main([server.address]) == 0  # "" = the server as a whole
    assert healthcheck.main([server.address, SERVICE]) == 0
    serving, status = healthcheck.check(server.address, "no.such.Service", timeout=2)
    assert not serving and status.startswith("NOT_FOUND")
    assert healthcheck.main([server.address, "no.such.Service", "--timeout", "2"]) == 1


def test_draining_server_is_not_serving(server: RunningServer) -> None:
    server.health.enter_graceful_shutdown()  # what stop() does first on SIGTERM
    assert healthcheck.main([server.address, "--timeout", "2"]) == 1


def test_no_server_is_not_serving() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serving, status = healthcheck.check(f"127.0.0.1:{port}", timeout=0.5)
    assert not serving
    assert status.startswith(("DEADLINE_EXCEEDED", "UNAVAILABLE"))
