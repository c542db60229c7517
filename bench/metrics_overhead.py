"""What the metrics interceptor costs per RPC.

    .venv/bin/python bench/metrics_overhead.py

1. In-process: a unary handler called directly, bare and wrapped by `MetricsInterceptor`
   (counters and histogram, no network), N calls each.
2. Over loopback: unary echo round trips to a bare `grpc.server` and to proxal's
   `start_server` (security, error mapping and metrics interceptors, metrics served),
   alternated ROUNDS times so background load hits both alike.
"""

from __future__ import annotations

import statistics
import time
from collections import namedtuple
from concurrent import futures
from typing import Any

import grpc
from proxal.runtime.metrics import MetricsInterceptor, new_registry
from proxal.runtime.server import ServerSettings, start_server

N = 100_000
CALLS = 2000
ROUNDS = 3
Details = namedtuple("Details", "method invocation_metadata")


class _Context:
    def code(self) -> None:
        return None


def in_process() -> tuple[float, float]:
    """(bare, wrapped) microseconds per call."""
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    interceptor = MetricsInterceptor(new_registry())
    wrapped = interceptor.intercept_service(lambda _: handler, Details("/b.S/M", ()))
    assert wrapped is not None
    out = []
    for fn in (handler.unary_unary, wrapped.unary_unary):
        context = _Context()
        start = time.perf_counter()
        for _ in range(N):
            fn(b"x", context)
        out.append((time.perf_counter() - start) / N * 1e6)
    return out[0], out[1]


def _register(server: grpc.Server) -> None:
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("b.S", handlers)])


def _round_trip_us(address: str) -> float:
    with grpc.insecure_channel(address) as channel:
        echo: Any = channel.unary_unary("/b.S/Echo")
        for _ in range(200):
            echo(b"x")
        start = time.perf_counter()
        for _ in range(CALLS):
            echo(b"x")
        return (time.perf_counter() - start) / CALLS * 1e6


def loopback() -> tuple[float, float]:
    """Median (bare, proxal) microseconds per round trip."""
    bare = grpc.server(futures.ThreadPoolExecutor(8))
    _register(bare)
    port = bare.add_insecure_port("127.0.0.1:0")
    bare.start()
    proxal = start_server(ServerSettings(port=0, metrics_port=0), _register, ["b.S"])
    try:
        times = [
            (_round_trip_us(f"127.0.0.1:{port}"), _round_trip_us(proxal.address))
            for _ in range(ROUNDS)
        ]
    finally:
        bare.stop(0)
        proxal.stop(0)
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main() -> None:
    bare, wrapped = in_process()
    print(f"in-process: bare {bare:.2f} us/call, with metrics {wrapped:.2f} us/call")
    bare, proxal = loopback()
    print(f"loopback round trip (median of {ROUNDS}): bare {bare:.0f} us, proxal {proxal:.0f} us")


if __name__ == "__main__":
    main()
