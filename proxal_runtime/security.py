"""TLS, mutual TLS and bearer tokens for proxal's gRPC servers and the clients that call them.

Servers: `ServerSecurity` (the --tls-cert, --tls-key, --tls-client-ca and --auth-token-file
flags, and PROXAL_AUTH_TOKEN) gives a port's TLS credentials and `BearerTokenInterceptor`,
which answers UNAUTHENTICATED before any handler runs unless the call carries
``authorization: Bearer <token>`` with an accepted token. The health service is exempt.

Clients: `ClientSecurity.from_env()` (PROXAL_TLS_CA, PROXAL_TLS_CLIENT_CERT,
PROXAL_TLS_CLIENT_KEY, PROXAL_AUTH_TOKEN, PROXAL_AUTH_TOKEN_FILE) opens channels: TLS when a
CA is set, a client certificate for mutual TLS, the token on every call.

The TLS itself is gRPC's; this module only checks settings early, so a bad file fails at
start with a message naming it, and compares tokens in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"  # probes cannot send tokens: exempt
MIN_TOKEN_LENGTH = 16
# RFC 6750's b64token: what `openssl rand -hex 32` or `-base64 32` prints.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# The environment a client reads (servers read theirs through proxal.runtime.settings).
CLIENT_ENV = (
    "PROXAL_TLS_CA",
    "PROXAL_TLS_CLIENT_CERT",
    "PROXAL_TLS_CLIENT_KEY",
    "PROXAL_AUTH_TOKEN",
    "PROXAL_AUTH_TOKEN_FILE",
)


class SecurityConfigError(ValueError):
    """Security settings that cannot work (a missing file, a key that does not fit)."""


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not data.strip():
        raise SecurityConfigError(f"{what} {path} is empty")
    return data


def _check_token(token: str) -> None:
    if not _TOKEN.fullmatch(token):
        raise SecurityConfigError(
            "a bearer token (PROXAL_AUTH_TOKEN or a token file) has characters a token cannot "
            "carry; use letters, digits and -._~+/ (e.g. `openssl rand -hex 32`)"
        )


def read_tokens(value: str, token_file: Path | None = None) -> tuple[str, ...]:
    """Tokens in `value` (comma-separated) and in `token_file` (one per line or comma-separated).

    Blank entries are skipped; a token file without a token is an error.
    """

    def split(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in re.split(r"[,\n]", text) if t.strip())

    tokens = split(value)
    if token_file is not None:
        from_file = split(_read(token_file, "token file").decode("utf-8", "replace"))
        if not from_file:
            raise SecurityConfigError(f"token file {token_file} holds no token")
        tokens += from_file
    return tokens


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSecurity:
    """A server's TLS files and accepted tokens; the default is plaintext and no token."""

    cert: Path | None = None  # PEM certificate (chain): serve TLS
    key: Path | None = None  # its PEM private key, unencrypted
    client_ca: Path | None = None  # PEM CA bundle: require client certificates (mutual TLS)
    tokens: tuple[str, ...] = field(default=(), repr=False)  # accepted bearer tokens

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SecurityConfigError(
                "--tls-cert and --tls-key (PROXAL_TLS_CERT, PROXAL_TLS_KEY) go together: "
                f"got only {'--tls-cert' if self.key is None else '--tls-key'}"
            )
        if self.client_ca is not None and self.cert is None:
            raise SecurityConfigError(
                "--tls-client-ca (PROXAL_TLS_CLIENT_CA) asks for client certificates, which "
                "needs TLS: set --tls-cert and --tls-key too"
            )
        for token in self.tokens:
            _check_token(token)
            if len(token) < MIN_TOKEN_LENGTH:
                raise SecurityConfigError(
                    f"a bearer token has {len(token)} characters; use at least "
                    f"{MIN_TOKEN_LENGTH} random ones (e.g. `openssl rand -hex 32`)"
                )

    def describe(self) -> str:
        """How the server is secured, for its start-up log line."""
        if self.cert is None:
            parts = ["plaintext"]
        elif self.client_ca is None:
            parts = ["TLS"]
        else:
            parts = ["mutual TLS"]
        parts.append(f"{len(self.tokens)} bearer token(s)" if self.tokens else "no token")
        return ", ".join(parts)

    def credentials(self) -> grpc.ServerCredentials | None:
        """The port's TLS credentials (None: plaintext), after checking the files fit together.

        Raises SecurityConfigError naming the file when one is unreadable, is not PEM, or the
        key does not belong to the certificate.
        """
        if self.cert is None or self.key is None:
            return None
        cert = _read(self.cert, "--tls-cert")
        key = _read(self.key, "--tls-key")
        client_ca = None if self.client_ca is None else _read(self.client_ca, "--tls-client-ca")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key, password=_no_password)
        except ssl.SSLError as exc:
            raise SecurityConfigError(
                f"--tls-cert {self.cert} and --tls-key {self.key} are not a PEM certificate "
                f"and its unencrypted private key ({exc.reason or exc})"
            ) from None
        if self.client_ca is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except ssl.SSLError as exc:
                raise SecurityConfigError(
                    f"--tls-client-ca {self.client_ca} is not a PEM CA certificate "
                    f"({exc.reason or exc})"
                ) from None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return [BearerTokenInterceptor(self.tokens)] if self.tokens else []

    def warn_if_exposed(self, host: str) -> None:
        """Log a warning when a non-loopback server leaks tokens or lets anyone in."""
        if _is_loopback(host):
            return
        if self.tokens and self.cert is None:
            log.warning(
                "bearer tokens cross the network in plaintext on %s: anyone on the path can "
                "read and replay them; serve TLS (--tls-cert, --tls-key)",
                host,
            )
        elif not self.tokens and self.client_ca is None:
            log.warning(
                "no authentication on %s: anyone who can reach this port can call every RPC; "
                "set PROXAL_AUTH_TOKEN (or --auth-token-file) or --tls-client-ca",
                host,
            )


def _no_password() -> bytes:
    raise SecurityConfigError("the --tls-key is encrypted; gRPC needs an unencrypted key")


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call but health's without ``authorization: Bearer <accepted token>``.

    A refused call gets UNAUTHENTICATED and its handler never runs.
    """

    def __init__(self, tokens: Sequence[str]):
        if not tokens:
            raise ValueError("BearerTokenInterceptor needs at least one token")
        self._tokens = [token.encode() for token in tokens]

    def _refusal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """None when the metadata carries an accepted token, else what is wrong."""
        values = [v for k, v in metadata or () if k == "authorization"]
        if not values:
            return (
                "missing credentials: send the metadata 'authorization: Bearer <token>' "
                "(proxal clients send PROXAL_AUTH_TOKEN)"
            )
        for value in values:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            presented = token.strip().encode()
            if scheme.lower() == "bearer" and any(
                hmac.compare_digest(presented, accepted) for accepted in self._tokens
            ):
                return None
        return "invalid credentials: the 'authorization: Bearer <token>' token is not accepted"

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)  # a lookup only: nothing runs yet
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        refusal = self._refusal(handler_call_details.invocation_metadata)
        if refusal is None:
            return handler

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            log.warning("refused %s from %s: %s", method, context.peer(), refusal)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)

        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        # Same kind of handler, so the request stream is left unread.
        return handler._replace(**{k: refuse for k in kinds if getattr(handler, k)})


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _ClientCallDetails(_CallDetails, grpc.ClientCallDetails):
    pass


class BearerTokenClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call on a channel."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _ClientCallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches proxal servers; the default is plaintext and no token."""

    ca: Path | None = None  # PEM CA to verify servers with: use TLS
    cert: Path | None = None  # PEM client certificate, for servers that require one
    key: Path | None = None  # its PEM private key
    token: str = field(default="", repr=False)  # sent as authorization: Bearer

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SecurityConfigError(
                "PROXAL_TLS_CLIENT_CERT and PROXAL_TLS_CLIENT_KEY go together: got only one"
            )
        if self.cert is not None and self.ca is None:
            raise SecurityConfigError(
                "a client certificate needs TLS: set PROXAL_TLS_CA to the CA that signed the "
                "servers' certificates"
            )
        if self.token:
            _check_token(self.token)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSecurity:
        """From PROXAL_TLS_CA, PROXAL_TLS_CLIENT_CERT/_KEY and the first token of
        PROXAL_AUTH_TOKEN, else of the file PROXAL_AUTH_TOKEN_FILE names."""
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        tokens = read_tokens(env.get("PROXAL_AUTH_TOKEN", ""), path("PROXAL_AUTH_TOKEN_FILE"))
        return cls(
            ca=path("PROXAL_TLS_CA"),
            cert=path("PROXAL_TLS_CLIENT_CERT"),
            key=path("PROXAL_TLS_CLIENT_KEY"),
            token=tokens[0] if tokens else "",
        )

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A channel to `target`: TLS when a CA is set, with the token on every call."""
        if self.ca is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(self.ca, "PROXAL_TLS_CA"),
                private_key=None if self.key is None else _read(self.key, "PROXAL_TLS_CLIENT_KEY"),
                certificate_chain=(
                    None if self.cert is None else _read(self.cert, "PROXAL_TLS_CLIENT_CERT")
                ),
            )
            channel = grpc.secure_channel(target, credentials, options=options)
        if self.token:
            return grpc.intercept_channel(channel, BearerTokenClientInterceptor(self.token))
        return channel
