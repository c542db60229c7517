"""gRPC server bootstrap shared by the services: error mapping, health, readiness,
reflection, security and metrics.

`STATUS_BY_ERROR` is the one table that turns proxal's domain errors into status codes.
Servicers stay thin: they raise `ProxalError`s (or let domain code raise them) and the
interceptor below aborts the call with the mapped code and the error's message.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from proxal.runtime import errors
from proxal.runtime.metrics import MetricsHttp, MetricsInterceptor, new_registry
from proxal.runtime.readiness import Readiness, ReadinessCheck
from proxal.runtime.security import ServerSecurity

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000  # longer messages are cut: gRPC drops trailers over its metadata limit

STATUS_BY_ERROR: dict[type[errors.ProxalError], grpc.StatusCode] = {
    errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.MissingDependencyError: grpc.StatusCode.FAILED_PRECONDITION,
}
_ERROR_BY_STATUS = {
    code: cls for cls, code in STATUS_BY_ERROR.items() if cls is not errors.MissingDependencyError
}


def error_from_rpc(exc: grpc.RpcError, service: str) -> errors.ProxalError:
    """The domain error for a failed call to another proxal service (the reverse mapping).

    Lets a service pass a downstream client mistake on with its status code intact.
    """
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.UnavailableError(f"{service} did not answer in time: {details}")
    cls = _ERROR_BY_STATUS.get(code)
    if cls is None:
        return errors.ProxalError(f"{service} failed ({code.name}): {details}")
    return cls(f"{service}: {details}")


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception: mapped ProxalErrors, UNIMPLEMENTED for a method
    a servicer does not implement, INTERNAL for anything else."""
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("internal error in %s", method)
        message = f"internal error in {method}: {type(exc).__name__}: {exc}"
    else:
        message = str(exc)
    if len(message) > MAX_ERROR_CHARS:  # it travels in a trailer, limited to 8-16 KiB
        message = message[:MAX_ERROR_CHARS] + f"... ({len(message)} characters in all)"
    context.abort(code, message)


@dataclass(frozen=True)
class _Undecodable:
    """Request bytes that are not the method's message; the call answers INVALID_ARGUMENT."""

    message: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning `_Undecodable` instead of raising. gRPC would otherwise
    answer INTERNAL ("Exception deserializing request!") before any handler runs."""
    if deserializer is None:
        return None
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError, or anything a parser raises
            return _Undecodable(
                f"the request is not a valid {name} message ({exc}); send the message "
                "that the service's .proto defines"
            )

    return parse


def _parsed(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise errors.InvalidArgumentError(request.message)
    return request


def _parsed_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        yield _parsed(request)


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Wraps every handler so a raised ProxalError becomes its mapped status code, and a
    request that does not parse becomes INVALID_ARGUMENT."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        parse = _parsed_stream if handler.request_streaming else _parsed

        def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(parse(request), context)
                except errors.ProxalError as exc:
                    _abort(context, exc, method)
                except Exception as exc:
                    if isinstance(exc, grpc.RpcError):  # context.abort() already called
                        raise
                    _abort(context, exc, method)

            return wrapped

        def streaming(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from behavior(parse(request), context)
                except errors.ProxalError as exc:
                    _abort(context, exc, method)
                except Exception as exc:
                    if isinstance(exc, grpc.RpcError):
                        raise
                    _abort(context, exc, method)

            return wrapped

        handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        if handler.unary_unary:
            return handler._replace(unary_unary=unary(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=unary(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=streaming(handler.unary_stream))
        if handler.stream_stream:
            return handler._replace(stream_stream=streaming(handler.stream_stream))
        return handler


@dataclass(frozen=True)
class ServerSettings:
    """Network settings every service shares."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port, reported through `port_file` and the log
    max_workers: int = 8
    max_message_bytes: int = 64 * 1024 * 1024
    port_file: Path | None = None
    security: ServerSecurity = field(default_factory=ServerSecurity)  # TLS and tokens
    metrics_port: int | None = None  # /metrics over HTTP on this port (0: ephemeral); None: off
    metrics_host: str | None = None  # the address metrics bind; None: `host`
    readiness_recheck_s: float = 10.0  # seconds between readiness checks once ready

    def grpc_options(self) -> list[tuple[str, int]]:
        # grpcio sets SO_REUSEPORT by default: a second server on a busy port would then
        # bind too and the kernel would split the calls between the two processes.
        return [*grpc_channel_options(self.max_message_bytes), ("grpc.so_reuseport", 0)]


def grpc_channel_options(max_message_bytes: int = 64 * 1024 * 1024) -> list[tuple[str, int]]:
    """Channel/server options with deliberate message-size limits (default 64 MiB)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


class RunningServer:
    """A started gRPC server with health, readiness, reflection and metrics; `port` is the
    bound port, `metrics_port` the bound metrics port (None when metrics are not served)."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        health_servicer: health.HealthServicer,
        readiness: Readiness,
        registry: CollectorRegistry,
        metrics_http: MetricsHttp | None = None,
    ):
        self.server = server
        self.port = port
        self.health = health_servicer
        self.readiness = readiness
        self.registry = registry
        self.address = f"127.0.0.1:{port}"
        self._metrics_http = metrics_http
        self.metrics_port = None if metrics_http is None else metrics_http.port

    def stop(self, grace: float | None = 2.0) -> None:
        """NOT_SERVING for every service first, then drain calls for up to `grace` seconds
        (metrics are served until the drain ends)."""
        self.health.enter_graceful_shutdown()
        self.readiness.stop()
        self.server.stop(grace).wait()
        self.readiness.join()  # a check in flight (a slow store) does not delay the drain
        if self._metrics_http is not None:
            self._metrics_http.stop()

    def wait(self) -> None:
        self.server.wait_for_termination()


PASS_ANOTHER = "pass another --host or --port"
BIND_PROBLEMS = {  # errno of a failed bind -> what to tell the user
    errno.EADDRINUSE: "the address is already in use (another server listens on it); "
    "stop that server or pass another --port",
    errno.EADDRNOTAVAIL: "the host is not an address of this machine; pass another --host",
    errno.EACCES: "permission denied (ports below 1024 need privileges); pass another --port",
}


def _bind_problem(host: str, port: int) -> str | None:
    """Why host:port cannot be listened on, or None if a plain socket can bind it now.

    Binds each address the host resolves to, as gRPC will (SO_REUSEADDR, no SO_REUSEPORT),
    so a busy port is reported here, before gRPC logs its own multi-line error.
    """
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"the host does not resolve ({exc.strerror}); pass a --host of this machine"
    problems = []
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                return None
            except OSError as exc:
                problems.append(exc)
    if not problems:
        return None
    first = problems[0]
    return BIND_PROBLEMS.get(first.errno or 0, f"{first.strerror or first}; {PASS_ANOTHER}")


def _add_port(server: grpc.Server, settings: ServerSettings, credentials: Any) -> int:
    """Bind the server to the settings' address; its port. Raises AddressUnavailableError."""
    address = f"{settings.host}:{settings.port}"
    problem = _bind_problem(settings.host, settings.port) if settings.port else None
    if problem is not None:
        raise errors.AddressUnavailableError(f"cannot serve on {address}: {problem}")
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpcio: "Failed to bind to address ..."
        raise errors.AddressUnavailableError(
            f"cannot serve on {address}: gRPC could not bind it ({exc}); {PASS_ANOTHER}"
        ) from None
    if port == 0:
        raise errors.AddressUnavailableError(f"cannot serve on {address}: gRPC could not bind it")
    return port


def start_server(
    settings: ServerSettings,
    register: Callable[[grpc.Server], None],
    service_names: Sequence[str],
    readiness: ReadinessCheck | None = None,
    registry: CollectorRegistry | None = None,
) -> RunningServer:
    """Build, register, start. `service_names` are full names for health and reflection.

    Health is NOT_SERVING until `readiness` (run on a background thread, retried, then
    re-run periodically: `proxal.runtime.readiness`) passes; without one, SERVING at once.
    Metrics go to `registry` (a new one by default, with the service's own metrics when the
    caller registered them there) and are served over HTTP when `settings.metrics_port`
    is set. Raises `security.SecurityConfigError` before serving when the TLS files do not
    work, and `errors.AddressUnavailableError` when an address cannot be bound.
    """
    security = settings.security
    credentials = security.credentials()
    registry = new_registry() if registry is None else registry
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers),
        interceptors=[
            MetricsInterceptor(registry),
            *security.interceptors(),
            ErrorMappingInterceptor(),
        ],
        options=settings.grpc_options(),
    )
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    ready = Readiness(
        health_servicer, service_names, readiness, registry, settings.readiness_recheck_s
    )
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = _add_port(server, settings, credentials)
    try:
        metrics_http = _start_metrics(settings, registry)
    except errors.AddressUnavailableError:
        server.stop(None)
        raise
    server.start()
    ready.start()
    if settings.port_file is not None:
        tmp = settings.port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, settings.port_file)  # readers never see a half-written file
    log.info(
        "serving %s on %s:%d (%s)%s",
        ", ".join(service_names),
        settings.host,
        port,
        security.describe(),
        ""
        if metrics_http is None
        else f"; metrics on http://{metrics_http.host}:{metrics_http.port}/metrics",
    )
    security.warn_if_exposed(settings.host)
    return RunningServer(server, port, health_servicer, ready, registry, metrics_http)


def _start_metrics(settings: ServerSettings, registry: CollectorRegistry) -> MetricsHttp | None:
    """The metrics HTTP server the settings ask for (None when metrics are off)."""
    if settings.metrics_port is None:
        return None
    host = settings.host if settings.metrics_host is None else settings.metrics_host
    return MetricsHttp(host.strip("[]"), settings.metrics_port, registry)


def start_or_exit(
    settings: ServerSettings,
    register: Callable[[grpc.Server], None],
    service_names: Sequence[str],
    program: str = "proxal",
    readiness: ReadinessCheck | None = None,
    registry: CollectorRegistry | None = None,
) -> RunningServer:
    """`start_server` for a command's main: a busy or foreign address exits with status 1
    and one line on stderr naming it, prefixed with the `program` that refused."""
    try:
        return start_server(settings, register, service_names, readiness, registry)
    except errors.AddressUnavailableError as exc:
        raise SystemExit(f"{program}: {exc}") from None


def serve_forever(running: RunningServer, grace: float = 5.0) -> None:
    """Block until SIGTERM/SIGINT, then drain in-flight calls for up to `grace` seconds."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    running.stop(grace)
