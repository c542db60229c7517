"""Prometheus metrics every proxal server exposes, on an HTTP port of its own.

`MetricsInterceptor` counts each RPC by method and status code and times it; the names and
labels follow the usual gRPC exporters (go-grpc-prometheus), so stock dashboards work:

- ``grpc_server_started_total{grpc_type, grpc_service, grpc_method}``: calls begun;
- ``grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}``: calls
  finished, by status code (``OK``, ``INVALID_ARGUMENT``, ...);
- ``grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}``: a histogram of
  the time from the call's start to its last response (for a stream, the whole stream).

``grpc_type`` is unary, client_stream, server_stream or bidi_stream. Each server has its
own `CollectorRegistry` (tests run several in one process); services register their own
metrics on it (`proxal.encoder_service.metrics`, ...). `MetricsHttp` serves the
registry at ``/metrics`` on its own port, plaintext and without authentication.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from proxal.runtime.errors import AddressUnavailableError

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0,
)  # fmt: skip  # seconds: a cached Select takes milliseconds, a large embedding run minutes
_BIND_PROBLEMS = {
    errno.EADDRINUSE: "the address is already in use; pass another --metrics-port",
    errno.EADDRNOTAVAIL: "the host is not an address of this machine; pass another --metrics-host",
    errno.EACCES: "permission denied (ports below 1024 need privileges); pass another "
    "--metrics-port",
}


def new_registry() -> CollectorRegistry:
    """A registry with the process, platform and GC collectors (``process_*``, ``python_*``)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _split(method: str) -> tuple[str, str]:
    """("pkg.Service", "Method") of a full method name "/pkg.Service/Method"."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    """The call's status code name: what the handler set or aborted with, else OK, or
    UNKNOWN for an exception that set none (gRPC answers UNKNOWN then)."""
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if failed else "OK"


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every call of the server it is installed on (module doc).

    Install it first, so it sees the codes that the inner interceptors (authentication,
    error mapping) answer with. Calls of methods the server does not have are not counted.
    """

    def __init__(self, registry: CollectorRegistry):
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its last response, in seconds.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}  # labels -> (started, seconds)

    def _series(self, labels: tuple[str, ...]) -> tuple[Any, Any]:
        """The (started counter, latency histogram) children of `labels`, looked up once."""
        series = self._children.get(labels)
        if series is None:
            series = self._children[labels] = (
                self.started.labels(*labels),
                self.seconds.labels(*labels),
            )
        return series

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        labels = (_rpc_type(handler), *_split(handler_call_details.method))
        started, seconds = self._series(labels)

        def finish(start: float, context: grpc.ServicerContext, failed: bool) -> None:
            self.handled.labels(*labels, _code(context, failed)).inc()
            seconds.observe(time.perf_counter() - start)

        def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                started.inc()
                start = time.perf_counter()
                try:
                    response = behavior(request, context)
                except BaseException:
                    finish(start, context, failed=True)
                    raise
                finish(start, context, failed=False)
                return response

            return wrapped

        def streaming(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started.inc()
                start = time.perf_counter()
                try:
                    yield from behavior(request, context)
                except GeneratorExit:  # the client went away before the stream ended
                    context.set_code(grpc.StatusCode.CANCELLED)
                    finish(start, context, failed=True)
                    raise
                except BaseException:
                    finish(start, context, failed=True)
                    raise
                finish(start, context, failed=False)

            return wrapped

        if handler.unary_unary:
            return handler._replace(unary_unary=unary(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=unary(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=streaming(handler.unary_stream))
        if handler.stream_stream:
            return handler._replace(stream_stream=streaming(handler.stream_stream))
        return handler


class MetricsHttp:
    """A running ``/metrics`` HTTP server; `port` is the bound port."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry):
        try:
            self._httpd, self._thread = start_http_server(port, host, registry)
        except OSError as exc:
            problem = _BIND_PROBLEMS.get(exc.errno or 0, f"{exc.strerror or exc}")
            raise AddressUnavailableError(
                f"cannot serve metrics on {host}:{port}: {problem}"
            ) from None
        self.host = host
        self.port: int = self._httpd.server_port

    def stop(self) -> None:
        """Stop answering scrapes and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
