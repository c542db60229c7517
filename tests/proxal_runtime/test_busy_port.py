"""A port already in use is refused: by each service's command (real processes) and by
the shared bootstrap itself (grpcio's SO_REUSEPORT is off)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from proxal.runtime import server as server_module
from proxal.runtime.errors import AddressUnavailableError
from proxal.runtime.server import RunningServer, ServerSettings, start_server
from proxal.store import Store

from tests.conftest import stops_cleanly
from tests.proxy_service.test_proxy_main import wait_for_port

BIN = Path(sys.executable).parent
COMMANDS = {  # each service's command, serving on --port P
    "proxal-proxy": [str(BIN / "proxal-proxy")],
    "proxal-encoder": [str(BIN / "proxal-encoder")],
    "proxal serve": [str(BIN / "proxal"), "serve", "--proxy", "127.0.0.1:1"],
}
ENV = {**os.environ, "LANCE_LOG": "error"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("busy") / "store"
    Store(str(path)).add_pool_rows("p", "train", ["a", "b"], [None, None])
    return str(path)


@pytest.fixture(scope="module")
def holder(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real proxal-proxy process serving on an ephemeral port: the port it holds."""
    port_file = tmp_path_factory.mktemp("holder") / "port"
    command = [*COMMANDS["proxal-proxy"], "--port", "0", "--port-file", str(port_file)]
    process = subprocess.Popen([*command, "--store", store, "--log-level", "WARNING"], env=ENV)
    with stops_cleanly(process):
        yield wait_for_port(port_file, process, timeout=60)


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service="")
        status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status
        return bool(status == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_second_server_on_a_busy_port_exits_1_naming_it(
    name: str, holder: int, store: str
) -> None:
    command = [*COMMANDS[name], "--port", str(holder), "--store", store, "--log-level", "WARNING"]
    try:
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:  # before the fix: it "served" on the port too
        raise AssertionError(f"{name} kept running on busy port {holder}") from exc
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"{name.split()[0]}: cannot serve on 127.0.0.1:{holder}: the address is already in "
        "use (another server listens on it); stop that server or pass another --port"
    ]
    assert _serving(holder)  # the first server still owns the port


@pytest.fixture
def running() -> Iterator[RunningServer]:
    first = start_server(ServerSettings(port=0), lambda _: None, ["test.Busy"])
    yield first
    first.stop(0)


def test_the_bootstrap_refuses_a_bound_port(running: RunningServer) -> None:
    with pytest.raises(AddressUnavailableError, match=f"127.0.0.1:{running.port}: the address"):
        start_server(ServerSettings(port=running.port), lambda _: None, ["test.Busy"])


def test_grpc_itself_does_not_share_the_port(
    running: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the bootstrap's own check, gRPC's bind fails too: SO_REUSEPORT is off."""
    monkeypatch.setattr(server_module, "_bind_problem", lambda host, port: None)
    with pytest.raises(AddressUnavailableError, match="gRPC could not bind it"):
        start_server(ServerSettings(port=running.port), lambda _: None, ["test.Busy"])


def test_a_foreign_host_is_refused_with_its_reason() -> None:
    settings = ServerSettings(host="192.0.2.1", port=5999)  # TEST-NET-1: never this machine's
    with pytest.raises(AddressUnavailableError, match=r"192\.0\.2\.1:5999: the host is not"):
        start_server(settings, lambda _: None, ["test.Busy"])
