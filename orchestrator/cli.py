"""The `proxal` command: `proxal demo` (the main job) and `proxal serve` (OrchestratorService)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from proxal_runtime.errors import ProxalError


def _csv(kind: Callable[[str], object] = str) -> Callable[[str], tuple[object, ...]]:
    """An argparse type for comma-separated values: "a,b" -> ("a", "b")."""
    return lambda value: tuple(kind(x) for x in value.split(",") if x)


def _demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from orchestrator.simulation import LoopConfig
    from orchestrator.successor import SuccessorConfig

    loop, succ = LoopConfig(), SuccessorConfig()
    p = sub.add_parser("demo", help="active learning on Banking77, end to end (the main job)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("proxal-demo"),
        help="output directory: store, logs, report.json, learning_curve.png",
    )
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--strategies", type=_csv(), default=loop.strategies)
    p.add_argument("--seeds", type=_csv(int), default=loop.seeds)
    p.add_argument("--initial", type=int, default=loop.initial_size, help="random initial labels")
    p.add_argument("--batch-size", type=int, default=loop.batch_size)
    p.add_argument("--rounds", type=int, default=loop.rounds)
    p.add_argument(
        "--successor-strategies",
        type=_csv(),
        default=("margin", "random"),
        help="fine-tune a successor on the labels of these strategies (first of --seeds); "
        "empty to skip",
    )
    p.add_argument("--successor-epochs", type=int, default=succ.epochs)
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use N evenly spaced training rows (quick runs)",
    )
    p.add_argument("--test-limit", type=int, default=None, help="use N evenly spaced test rows")


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from proxal_runtime.settings import add_common_args

    p = sub.add_parser("serve", help="run OrchestratorService (labeling sessions)")
    add_common_args(p, "PROXAL_ORCHESTRATOR")
    p.add_argument(
        "--proxy",
        default=os.environ.get("PROXAL_ORCHESTRATOR_PROXY", ""),
        required="PROXAL_ORCHESTRATOR_PROXY" not in os.environ,
        help="address of a proxy service, host:port (env PROXAL_ORCHESTRATOR_PROXY)",
    )


def run_demo_command(args: argparse.Namespace) -> int:
    from orchestrator.demo import DemoConfig, run_demo
    from orchestrator.simulation import LoopConfig
    from orchestrator.successor import SuccessorConfig

    config = DemoConfig(
        out_dir=args.out,
        backend=args.backend,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        loop=LoopConfig(
            strategies=args.strategies,
            seeds=args.seeds,
            initial_size=args.initial,
            batch_size=args.batch_size,
            rounds=args.rounds,
        ),
        successor_strategies=args.successor_strategies,
        successor=SuccessorConfig(epochs=args.successor_epochs),
    )
    run_demo(config)
    return 0


def run_serve_command(args: argparse.Namespace) -> int:
    from proxal.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    from orchestrator.clients import ProxyClient
    from orchestrator.servicer import OrchestratorServicer
    from orchestrator.sessions import Sessions
    from proxal_runtime.server import serve_forever, start_server
    from proxal_runtime.settings import configure_logging, server_settings
    from proxal_store import Store

    configure_logging(args.log_level)
    servicer = OrchestratorServicer(Sessions(Store(args.store), ProxyClient(args.proxy)))
    name = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
    running = start_server(
        server_settings(args),
        lambda s: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, s),
        [name],
    )
    serve_forever(running)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LANCE_LOG", "error")
    parser = argparse.ArgumentParser(prog="proxal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    _serve_parser(sub)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the demo's service subprocesses are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.command == "demo":
            return run_demo_command(args)
        return run_serve_command(args)
    except grpc.RpcError as exc:
        code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        print(f"proxal: {code}: {details}", file=sys.stderr)
        return 1
    except ProxalError as exc:
        print(f"proxal: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
