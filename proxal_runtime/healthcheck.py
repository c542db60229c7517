"""`python -m proxal.runtime.healthcheck HOST:PORT [SERVICE]`: is a proxal server serving?

Asks the server's gRPC health service (registered by `proxal.runtime.server.start_server`)
about SERVICE (default "": the server as a whole) and exits 0 when the answer is SERVING,
1 otherwise: NOT_SERVING, an unknown service, no answer within --timeout, or no server.
A server says NOT_SERVING until it is ready and while it drains (`proxal.runtime.readiness`),
so this is a readiness probe. With --live it exits 0 on any answer (SERVING or NOT_SERVING):
a liveness probe, which must not restart a server only waiting for a dependency.
Container HEALTHCHECKs and the Kubernetes exec probes call it. It speaks TLS (and presents a
client certificate) as the client environment says (PROXAL_TLS_CA, PROXAL_TLS_CLIENT_CERT,
PROXAL_TLS_CLIENT_KEY; see docs/security.md) and sends no token: health needs none.
It imports only grpc, the health stubs and proxal.runtime.security, so it starts fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from proxal.runtime.security import ClientSecurity, SecurityConfigError

SERVING = 0
NOT_SERVING = 1


def check(
    address: str,
    service: str = "",
    timeout: float = 3.0,
    security: ClientSecurity | None = None,
    live: bool = False,
) -> tuple[bool, str]:
    """(serving, what the server said) for `service` at `address` (host:port), over TLS
    when `security` (by default the environment's) says so; with `live`, any answer of
    the health service counts as serving (the process is alive)."""
    try:
        security = ClientSecurity.from_env() if security is None else security
        channel = dataclasses.replace(security, token="").channel(address)
    except SecurityConfigError as exc:
        return False, f"CLIENT SETTINGS: {exc}"
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=timeout,
                wait_for_ready=True,  # ride out a server still binding, up to the timeout
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return False, f"{code.name if code else 'ERROR'}: {details}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return live or response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m proxal.runtime.healthcheck",
        description="exit 0 when the gRPC health service at HOST:PORT reports SERVICE as "
        "SERVING, 1 otherwise",
    )
    parser.add_argument("address", metavar="HOST:PORT")
    parser.add_argument(
        "service", nargs="?", default="", help="full service name (default: the whole server)"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument(
        "--live",
        action="store_true",
        help="exit 0 on any answer, NOT_SERVING included (a liveness probe)",
    )
    args = parser.parse_args(argv)
    serving, status = check(args.address, args.service, args.timeout, live=args.live)
    name = args.service or "server"
    print(f"{args.address} {name}: {status}", file=sys.stdout if serving else sys.stderr)
    return SERVING if serving else NOT_SERVING


if __name__ == "__main__":
    sys.exit(main())
