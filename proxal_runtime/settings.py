"""Building a service's frozen settings from flags and prefixed environment variables.

Flags win over environment variables (`PROXAL_<SERVICE>_<NAME>`), which win over
defaults. Nothing is read at import time: services call these from `main()`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from proxal.runtime.security import SecurityConfigError, ServerSecurity, read_tokens
from proxal.runtime.server import ServerSettings

DEFAULT_STORE = "./proxal-store"


def env_default(prefix: str, name: str, default: str, env: Mapping[str, str]) -> str:
    return env.get(f"{prefix}_{name.upper()}", env.get(f"PROXAL_{name.upper()}", default))


def add_common_args(
    parser: argparse.ArgumentParser, prefix: str, env: Mapping[str, str] | None = None
) -> None:
    """Flags shared by every service: network, store, workers, TLS and bearer tokens.

    Accepted tokens come from PROXAL_<SERVICE>_AUTH_TOKEN or PROXAL_AUTH_TOKEN
    (comma-separated; never a flag, so they stay out of `ps`) and from --auth-token-file.
    """
    env = os.environ if env is None else env
    parser.add_argument("--host", default=env_default(prefix, "host", "127.0.0.1", env))
    parser.add_argument("--port", type=int, default=int(env_default(prefix, "port", "0", env)))
    parser.add_argument(
        "--port-file",
        type=Path,
        default=env_default(prefix, "port_file", "", env) or None,
        help="write the bound port here once serving (useful with --port 0)",
    )
    parser.add_argument(
        "--store",
        default=env_default(prefix, "store", DEFAULT_STORE, env),
        help="embedding store: a local directory or an s3:// URI (env PROXAL_STORE)",
    )
    parser.add_argument(
        "--store-option",
        action="append",
        metavar="KEY=VALUE",
        default=[x for x in env.get("PROXAL_STORE_OPTIONS", "").split(",") if x],
        help="object-storage option for the store, repeatable, e.g. aws_endpoint=http://... "
        "(env PROXAL_STORE_OPTIONS, comma-separated)",
    )
    parser.add_argument(
        "--workers", type=int, default=int(env_default(prefix, "workers", "8", env))
    )
    parser.add_argument(
        "--max-message-mb", type=int, default=int(env_default(prefix, "max_message_mb", "64", env))
    )
    parser.add_argument("--log-level", default=env_default(prefix, "log_level", "INFO", env))
    parser.add_argument(
        "--metrics-port",
        type=_metrics_port,
        default=env.get(f"{prefix}_METRICS_PORT", ""),
        help="serve Prometheus metrics over HTTP at /metrics on this port (0: a free one, "
        f"logged); unset: no metrics (env {prefix}_METRICS_PORT; docs/deploy.md)",
    )
    parser.add_argument(
        "--metrics-host",
        default=env.get(f"{prefix}_METRICS_HOST") or None,
        help=f"address the metrics port binds (default: --host; env {prefix}_METRICS_HOST); "
        "metrics need no token, so keep them off public addresses",
    )
    tls = parser.add_argument_group("TLS and authentication (docs/security.md)")
    tls.add_argument(
        "--tls-cert",
        type=Path,
        default=env_default(prefix, "tls_cert", "", env) or None,
        help="PEM server certificate (chain): serve TLS instead of plaintext (env PROXAL_TLS_CERT)",
    )
    tls.add_argument(
        "--tls-key",
        type=Path,
        default=env_default(prefix, "tls_key", "", env) or None,
        help="the certificate's unencrypted PEM private key (env PROXAL_TLS_KEY)",
    )
    tls.add_argument(
        "--tls-client-ca",
        type=Path,
        default=env_default(prefix, "tls_client_ca", "", env) or None,
        help="PEM CA bundle: require client certificates it signed, i.e. mutual TLS "
        "(env PROXAL_TLS_CLIENT_CA)",
    )
    tls.add_argument(
        "--auth-token-file",
        type=Path,
        default=env_default(prefix, "auth_token_file", "", env) or None,
        help="file of accepted bearer tokens, one a line; calls without one get "
        "UNAUTHENTICATED (env PROXAL_AUTH_TOKEN_FILE; PROXAL_AUTH_TOKEN adds comma-separated "
        "tokens)",
    )
    parser.set_defaults(auth_token=env_default(prefix, "auth_token", "", env))


def _metrics_port(value: str) -> int | None:
    """--metrics-port: "" (off) or a port number 0..65535."""
    if not value.strip():
        return None
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, got {value!r}")
    return port


def store_options(args: argparse.Namespace) -> dict[str, str] | None:
    """`--store-option KEY=VALUE` flags as Lance storage options (None when there are none)."""
    options = {}
    for item in args.store_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--store-option must be KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    return options or None


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """Settings from `add_common_args` flags; exits with a message when security settings
    cannot work (a missing or mismatched file, an empty token file, a short token)."""
    try:
        security = ServerSecurity(
            cert=args.tls_cert,
            key=args.tls_key,
            client_ca=args.tls_client_ca,
            tokens=read_tokens(args.auth_token, args.auth_token_file),
        )
        security.credentials()  # read and check the files now, not at the first call
    except SecurityConfigError as exc:
        raise SystemExit(f"proxal: {exc}") from None
    return ServerSettings(
        host=args.host,
        port=args.port,
        max_workers=args.workers,
        max_message_bytes=args.max_message_mb * 1024 * 1024,
        port_file=args.port_file,
        security=security,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )


def configure_logging(level: str) -> None:
    # Lance logs from Rust; keep its WARNs about new datasets out of our logs.
    os.environ.setdefault("LANCE_LOG", "error")
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return args
