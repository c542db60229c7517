"""`proxal ls-backend`: Label Studio's ML backend over a running `proxal serve`
(docs/label_studio.md). The web stack is imported only when the command runs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from proxal.orchestrator_service.rpc.ls_http import Auth

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
HELP = "serve Label Studio's ML-backend API over a labelling session per project"
CONNECT_SECONDS = 10.0


def add_parser(sub: Sub) -> None:
    env = os.environ.get
    p = sub.add_parser("ls-backend", help=HELP, description=HELP)
    p.add_argument("--pool", required=True, help="the embedded pool the projects label")
    p.add_argument("--split", default="train", help="the split to label (default train)")
    p.add_argument("--strategy", default="margin", help="the sessions' strategy (default margin)")
    p.add_argument("--batch-size", type=int, default=10, help="the sessions' batch size")
    p.add_argument("--embedding-version", default="", help="default: the newest complete one")
    p.add_argument(
        "--orchestrator",
        default=env("PROXAL_ORCHESTRATOR", "127.0.0.1:50053"),
        help="address of `proxal serve`, host:port (env PROXAL_ORCHESTRATOR; default "
        "127.0.0.1:50053)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=9090, help="port to listen on (default 9090)")
    p.add_argument(
        "--state",
        default=env("PROXAL_LS_STATE", "proxal-ls-backend.sqlite3"),
        help="SQLite file mapping annotations to pool ids, for delete events (env "
        "PROXAL_LS_STATE; default ./proxal-ls-backend.sqlite3)",
    )
    p.add_argument(
        "--basic-auth-user",
        default=env("BASIC_AUTH_USER", ""),
        help="HTTP Basic user Label Studio's model connection sends (env BASIC_AUTH_USER)",
    )
    p.add_argument(
        "--basic-auth-pass",
        default=env("BASIC_AUTH_PASS", ""),
        help="its password (env BASIC_AUTH_PASS; prefer the env var to a flag)",
    )
    p.add_argument(
        "--token",
        default=env("PROXAL_LS_TOKEN", ""),
        help="also accept 'Authorization: Bearer TOKEN' (env PROXAL_LS_TOKEN)",
    )


def _auth(args: argparse.Namespace) -> Auth:
    from proxal.orchestrator_service.rpc.ls_http import Auth

    if bool(args.basic_auth_user) != bool(args.basic_auth_pass):
        raise SystemExit(
            "proxal ls-backend: set both --basic-auth-user and --basic-auth-pass (env "
            "BASIC_AUTH_USER, BASIC_AUTH_PASS), or neither"
        )
    return Auth(args.basic_auth_user, args.basic_auth_pass, args.token)


def run(args: argparse.Namespace) -> int:
    """Check the flags and the orchestrator, then serve until Ctrl-C."""
    if not 0 <= args.port <= 65535 or args.batch_size < 1:
        raise SystemExit("proxal ls-backend: --port must be 0-65535 and --batch-size >= 1")
    auth = _auth(args)
    import uvicorn
    from proxal.orchestrator_service.labelstudio.backend import (
        LabelStudioBackend,
        SessionSettings,
    )
    from proxal.orchestrator_service.labelstudio.state import AnnotationIndex
    from proxal.orchestrator_service.rpc.ls_client import LsOrchestrator
    from proxal.orchestrator_service.rpc.ls_http import create_app
    from proxal.runtime.names import check_name

    check_name("pool", args.pool)
    check_name("split", args.split)
    orchestrator = LsOrchestrator(args.orchestrator)
    orchestrator.connect(CONNECT_SECONDS)
    settings = SessionSettings(
        args.pool, args.split, args.strategy, args.batch_size, args.embedding_version
    )
    backend = LabelStudioBackend(orchestrator, settings, AnnotationIndex(args.state))
    app = create_app(backend, auth, args.orchestrator)
    print(
        f"proxal ls-backend: http://{args.host}:{args.port} for Label Studio, pool "
        f"{args.pool!r} split {args.split!r}, orchestrator {args.orchestrator}, auth "
        f"{'on' if auth.enabled else 'off'}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    orchestrator.close()
    return 0
