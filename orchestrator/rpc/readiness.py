"""The orchestrator's readiness: its store and database answer, and a proxy replica serves.

`proxal.runtime.readiness` runs `check` on a background thread and keeps the server's
health NOT_SERVING until it passes (and again whenever it fails later).
"""

from __future__ import annotations

import dataclasses

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from proxal.orchestrator_service.rpc.sharding import ReplicaSet
from proxal.proxy.v1 import proxy_pb2
from proxal.runtime.errors import UnavailableError
from proxal.runtime.readiness import ReadinessCheck, all_of
from proxal.runtime.security import ClientSecurity
from proxal.store import Store

PROXY_SERVICE = proxy_pb2.DESCRIPTOR.services_by_name["ProxyService"].full_name
PROBE_TIMEOUT_S = 3.0


def _proxy_status(address: str, authority: str | None, security: ClientSecurity) -> str:
    """The health status name the proxy at `address` gives for ProxyService, or the error."""
    options = [("grpc.ssl_target_name_override", authority)] if authority else []
    with security.channel(address, options) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=PROXY_SERVICE), timeout=PROBE_TIMEOUT_S
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return code.name if code is not None else "ERROR"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def proxy_check(replicas: ReplicaSet, security: ClientSecurity | None = None) -> ReadinessCheck:
    """A check that passes when at least one proxy replica reports SERVING."""

    def check() -> None:
        replicas.refresh()  # rate-limited; only a DNS name resolves again
        addresses = replicas.addresses()
        if not addresses:
            raise UnavailableError(f"the proxy address {replicas.spec} resolves to no replica")
        client = ClientSecurity.from_env() if security is None else security
        client = dataclasses.replace(client, token="")  # health needs no token
        seen = {a: _proxy_status(a, replicas.authority, client) for a in addresses}
        if "SERVING" not in seen.values():
            said = ", ".join(f"{a}: {s}" for a, s in seen.items())
            raise UnavailableError(f"no proxy replica serves ({said})")

    return check


def orchestrator_check(store: Store, replicas: ReplicaSet) -> ReadinessCheck:
    """The store (with its session database), then the proxy."""
    return all_of(lambda: store.check_reachable(database=True), proxy_check(replicas))
