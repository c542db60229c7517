"""Metrics and readiness of `proxal.runtime.server` on a real server with a small service."""

from __future__ import annotations

import argparse
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import grpc
import pytest
from proxal.runtime import healthcheck
from proxal.runtime.errors import AddressUnavailableError, InvalidArgumentError, UnavailableError
from proxal.runtime.security import ServerSecurity
from proxal.runtime.server import RunningServer, ServerSettings, start_server
from proxal.runtime.settings import add_common_args, server_settings

from tests.ops import NOT_SERVING, SERVING, scrape, status, value, wait_for, watch

SERVICE = "test.Ops"


class Service:
    """Unary `Echo` (fails on b"bad"), `Block` (waits for `release`), streaming `Count`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = threading.Event()

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"bad":
            raise InvalidArgumentError("bad request")
        return request

    def block(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.blocked.set()
        self.release.wait(30)
        return b"done"

    def count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    def register(self, server: grpc.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Block": grpc.unary_unary_rpc_method_handler(self.block),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


class Gate:
    """A readiness check that passes while `open` is set."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def __call__(self) -> None:
        if not self.open.is_set():
            raise UnavailableError("the gate is shut")


@pytest.fixture()
def served() -> Iterator[tuple[RunningServer, Service, Gate, grpc.Channel]]:
    service, gate = Service(), Gate()
    settings = ServerSettings(port=0, metrics_port=0, readiness_recheck_s=0.05)
    running = start_server(settings, service.register, [SERVICE], readiness=gate)
    channel = grpc.insecure_channel(running.address)
    yield running, service, gate, channel
    service.release.set()
    channel.close()
    running.stop(0)


def test_rpc_counts_codes_and_latency(
    served: tuple[RunningServer, Service, Gate, grpc.Channel],
) -> None:
    running, _, _, channel = served
    echo = channel.unary_unary(f"/{SERVICE}/Echo")
    count = channel.unary_stream(f"/{SERVICE}/Count")
    assert echo(b"hi") == b"hi" and echo(b"ho") == b"ho"
    with pytest.raises(grpc.RpcError) as failed:
        echo(b"bad")
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert list(count(b"3")) == [b"0", b"1", b"2"]
    assert running.metrics_port
    samples = scrape(running.metrics_port)
    unary = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Echo"}
    assert value(samples, "grpc_server_started_total", **unary) == 3
    assert value(samples, "grpc_server_handled_total", **unary, grpc_code="OK") == 2
    assert value(samples, "grpc_server_handled_total", **unary, grpc_code="INVALID_ARGUMENT") == 1
    assert value(samples, "grpc_server_handling_seconds_count", **unary) == 3
    assert value(samples, "grpc_server_handling_seconds_bucket", **unary, le="+Inf") == 3
    assert value(samples, "grpc_server_handling_seconds_bucket", **unary, le="0.001") <= 3
    stream = {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "Count"}
    assert value(samples, "grpc_server_handled_total", **stream, grpc_code="OK") == 1
    assert any(name == "python_info" for name, _ in samples)  # the process collectors


def test_readiness_transitions(served: tuple[RunningServer, Service, Gate, grpc.Channel]) -> None:
    running, _, gate, channel = served
    for name in ("", SERVICE):  # the server as a whole and its service
        assert status(channel, name) == NOT_SERVING
    address = f"127.0.0.1:{running.port}"
    assert healthcheck.check(address) == (False, "NOT_SERVING")
    assert healthcheck.check(address, SERVICE) == (False, "NOT_SERVING")
    assert healthcheck.check(address, live=True) == (True, "NOT_SERVING")  # alive, not ready
    assert healthcheck.main([address, "--live"]) == 0 and healthcheck.main([address]) == 1
    gate.open.set()
    wait_for(channel, SERVING)
    assert status(channel, SERVICE) == SERVING
    assert healthcheck.check(address, SERVICE) == (True, "SERVING")
    assert running.metrics_port and value(scrape(running.metrics_port), "proxal_ready") == 1
    gate.open.clear()  # a dependency lost later: the periodic check notices
    wait_for(channel, NOT_SERVING, SERVICE)
    assert "gate is shut" in running.readiness.problem
    assert value(scrape(running.metrics_port), "proxal_ready") == 0


def test_not_serving_before_the_drain_ends(
    served: tuple[RunningServer, Service, Gate, grpc.Channel],
) -> None:
    running, service, gate, channel = served
    gate.open.set()
    wait_for(channel, SERVING)
    statuses = watch(channel, SERVICE)
    assert next(statuses).status == SERVING
    in_flight: Future[bytes] = channel.unary_unary(f"/{SERVICE}/Block").future(b"")
    assert service.blocked.wait(10)
    stopping = threading.Thread(target=running.stop, args=(30,))
    stopping.start()
    assert next(statuses).status == NOT_SERVING
    assert not in_flight.done(), "NOT_SERVING must come while calls still drain"
    statuses.cancel()
    service.release.set()
    assert in_flight.result(timeout=10) == b"done"
    stopping.join(timeout=40)
    assert not stopping.is_alive()


def test_without_a_check_the_server_serves_at_once() -> None:
    service = Service()
    running = start_server(ServerSettings(port=0), service.register, [SERVICE])
    try:
        assert running.readiness.ready and running.metrics_port is None
        with grpc.insecure_channel(running.address) as channel:
            assert status(channel, SERVICE) == SERVING
    finally:
        running.stop(0)


def test_busy_metrics_port_is_refused() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(AddressUnavailableError, match="--metrics-port"):
            start_server(ServerSettings(port=0, metrics_port=port), Service().register, [SERVICE])


def test_metrics_port_flag_and_env() -> None:
    def parse(argv: list[str], env: dict[str, str]) -> ServerSettings:
        parser = argparse.ArgumentParser()
        add_common_args(parser, "PROXAL_PROXY", env)
        return server_settings(parser.parse_args(argv))

    assert parse([], {}).metrics_port is None
    assert parse([], {"PROXAL_PROXY_METRICS_PORT": "9102"}).metrics_port == 9102
    got = parse(["--metrics-port", "0", "--metrics-host", "0.0.0.0"], {})
    assert (got.metrics_port, got.metrics_host) == (0, "0.0.0.0")
    with pytest.raises(SystemExit) as exited:
        parse(["--metrics-port", "http"], {})
    assert exited.value.code == 2


def test_refused_calls_are_counted_with_their_code() -> None:
    """The metrics interceptor runs first: a call the token check refuses is counted."""
    token = "a-token-long-enough-0123456789"
    settings = ServerSettings(port=0, metrics_port=0, security=ServerSecurity(tokens=(token,)))
    running = start_server(settings, Service().register, [SERVICE])
    try:
        with grpc.insecure_channel(running.address) as channel:
            echo = channel.unary_unary(f"/{SERVICE}/Echo")
            with pytest.raises(grpc.RpcError) as refused:
                echo(b"hi")
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert echo(b"hi", metadata=[("authorization", f"Bearer {token}")]) == b"hi"
        assert running.metrics_port
        samples = scrape(running.metrics_port)
        unary = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Echo"}
        handled = "grpc_server_handled_total"
        assert value(samples, handled, **unary, grpc_code="UNAUTHENTICATED") == 1
        assert value(samples, handled, **unary, grpc_code="OK") == 1
    finally:
        running.stop(0)
