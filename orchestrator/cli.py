"""The `proxal` command: `demo` (the main job), `serve` (OrchestratorService), `finetune` (a
successor from a session's labels, optionally with PLASM pseudo-labels), `report` (a run
directory's evaluation as Markdown/HTML, JSON and plots), `compare` (two runs side by side),
`asm` (acquisition sequence mismatch and dataset transfer between two runs), the encoder
client commands `ingest`, `embed` and `versions`, and the labeling commands `session`,
`labels` and `label` (orchestrator/label_cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from orchestrator import label_cli
from proxal_runtime.errors import ProxalError
from proxal_runtime.security import SecurityConfigError


def _csv(kind: Callable[[str], object] = str) -> Callable[[str], tuple[object, ...]]:
    """An argparse type for comma-separated values: "a,b" -> ("a", "b")."""
    return lambda value: tuple(kind(x) for x in value.split(",") if x)


def _demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from orchestrator.simulation import LoopConfig
    from orchestrator.successor_config import METHODS

    loop = LoopConfig()
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
        "--ups-gamma",
        type=float,
        default=0.0,
        help="unlabeled pool subsampling: re-score only this top fraction plus a tempered "
        "sample (0.1 in the paper); 0 = score the whole pool every round",
    )
    p.add_argument("--ups-temperature", type=float, default=0.01, help="UPS temperature T")
    p.add_argument(
        "--ups-full-rounds", type=int, default=2, help="UPS: score the whole pool first N rounds"
    )
    p.add_argument(
        "--ups-full-every", type=int, default=5, help="UPS: then every Nth round (0 = never)"
    )
    p.add_argument(
        "--asvp-every",
        type=int,
        default=0,
        help="ASVP: check the features every N rounds (fine-tune with LoRA, compare LogME-PED, "
        "re-embed the pool when the gap passes the threshold); 0 = off unless --asvp-growth",
    )
    p.add_argument(
        "--asvp-growth",
        type=float,
        default=0.0,
        help="ASVP: also check when the labeled set grew by this factor (e.g. 2); 0 = off",
    )
    p.add_argument("--asvp-threshold", type=float, default=0.03, help="ASVP: LogME gap to refresh")
    p.add_argument("--asvp-no-ped", action="store_true", help="ASVP: plain LogME, without PED")
    p.add_argument(
        "--successor-method",
        choices=METHODS,
        default="full",
        help="how successors are fine-tuned (with ASVP on, its LP-FT/FT rule decides)",
    )
    p.add_argument(
        "--successor-strategies",
        type=_csv(),
        default=("margin", "random"),
        help="fine-tune a successor on the labels of these strategies (first of --seeds); "
        "empty to skip",
    )
    p.add_argument("--successor-epochs", type=int, default=None, help="default: 6")
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
        help="proxy service address: host:port, or dns:///name:port or ip:port,ip:port for "
        "replicas (calls spread round-robin) (env PROXAL_ORCHESTRATOR_PROXY)",
    )


def _finetune_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from orchestrator.successor_config import METHODS, SuccessorConfig
    from proxal_runtime.settings import DEFAULT_STORE, env_default

    # The field defaults, read without building a config (which would load torch for the device).
    default = {f.name: f.default for f in dataclasses.fields(SuccessorConfig)}
    p = sub.add_parser(
        "finetune",
        help="fine-tune a successor classifier on a labeling session's labels",
        description="Fine-tune MiniLM-L6 on the labels SESSION acquired, evaluate it on the "
        "pool's gold-labelled test split, and write model.safetensors, model.onnx, "
        "labels.json, config.json, the tokenizer and metrics.json to --out.",
    )
    p.add_argument("session", help="the labeling session whose labels to train on")
    p.add_argument("--out", type=Path, required=True, help="directory to write the successor to")
    p.add_argument(
        "--store",
        default=env_default("PROXAL_ORCHESTRATOR", "store", DEFAULT_STORE, os.environ),
        help="the store holding the session: a local directory or an s3:// URI (env PROXAL_STORE)",
    )
    p.add_argument(
        "--store-option",
        action="append",
        metavar="KEY=VALUE",
        default=[x for x in os.environ.get("PROXAL_STORE_OPTIONS", "").split(",") if x],
        help="object-storage option for the store, repeatable",
    )
    p.add_argument("--method", choices=METHODS, default=default["method"])
    p.add_argument("--epochs", type=int, default=default["epochs"])
    p.add_argument("--batch-size", type=int, default=default["batch_size"])
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=default["validation_fraction"],
        help="hold out this fraction of the labels for early stopping, in [0, 1); 0 = off",
    )
    p.add_argument("--patience", type=int, default=default["patience"])
    p.add_argument("--seed", type=int, default=default["seed"])
    p.add_argument("--max-length", type=int, default=default["max_length"])
    p.add_argument("--device", default=default["device"], help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--test-split",
        default="test",
        help="pool split whose gold labels score the successor (skipped when it has none)",
    )
    p.add_argument("--no-onnx", action="store_true", help="do not write model.onnx")
    p.add_argument(
        "--model",
        default=None,
        help="the successor's architecture: a local Hugging Face encoder checkpoint directory "
        "(default: the bundled MiniLM-L6); it need not be the model that acquired the labels",
    )
    p.add_argument(
        "--plasm",
        action="store_true",
        help="PLASM: a teacher fine-tuned on the labels pseudo-labels the rest of the pool, the "
        "pseudo-labels are filtered, and the successor trains on gold + kept pseudo-labels",
    )
    p.add_argument(
        "--plasm-filter",
        choices=("uncertainty", "cleanlab", "none"),
        default="uncertainty",
        help="keep the teacher's most certain pseudo-labels (as many as its held-out accuracy "
        "says are right), or drop those confident learning (cleanlab) flags, or keep all",
    )
    p.add_argument(
        "--plasm-pool-sample",
        type=int,
        default=None,
        help="pseudo-label at most N unlabeled texts (a seeded sample; default: all)",
    )
    p.add_argument(
        "--plasm-heldout",
        type=float,
        default=0.2,
        help="fraction of the labels the teacher holds out to score itself",
    )


def _asm_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "asm",
        help="acquisition sequence mismatch between two runs, and ΔAUC of dataset transfer",
        description="Compare the acquisition sequences of every (strategy, seed) session two "
        "run directories over the same pool share: batch mismatch (mean GloVe cosine distance "
        "of the Hungarian matching) per step, and ASM, its running mean. Unless --no-transfer, "
        "also fit run B's model on run A's sequences: ΔAUC(A→B) = AUC(B on A's labels) − "
        "AUC(B's own random session).",
    )
    p.add_argument("run_a", type=Path, help="run directory of the acquiring model A")
    p.add_argument("run_b", type=Path, help="run directory of the consumer model B")
    p.add_argument("--strategies", type=_csv(), default=(), help="only these strategies")
    p.add_argument("--json", type=Path, default=None, help="write every number to this file")
    p.add_argument("--no-transfer", action="store_true", help="ASM only; no proxy needed")
    p.add_argument(
        "--proxy",
        default="",
        help="proxy service over run B's store, host:port (default: start one for the command)",
    )


def _encoder_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    encoder = argparse.ArgumentParser(add_help=False)
    encoder.add_argument(
        "--encoder",
        default=os.environ.get("PROXAL_ENCODER_ADDRESS", "127.0.0.1:50051"),
        help="encoder service address (env PROXAL_ENCODER_ADDRESS)",
    )
    p = sub.add_parser("ingest", parents=[encoder], help="upload a JSONL/CSV file as a pool split")
    p.add_argument("pool")
    p.add_argument("file", type=Path)
    p.add_argument("--split", default="train")
    p = sub.add_parser("embed", parents=[encoder], help="embed a pool as a new version")
    p.add_argument("pool")
    p.add_argument("--model", default="", help="minilm-l6 (default) or minilm-l3")
    p.add_argument("--backend", default="", help="torch or onnx (default: the server's)")
    p.add_argument("--precision", default="", help="fp32 (default), fp16, bf16 or int8")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--max-length", type=int, default=0)
    p = sub.add_parser("versions", parents=[encoder], help="list and manage embedding versions")
    p.add_argument("pool")
    p.add_argument("--all", action="store_true", help="include running and failed runs")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--pin", metavar="VERSION")
    action.add_argument("--unpin", metavar="VERSION")
    action.add_argument("--delete", metavar="VERSION")
    action.add_argument("--compare", nargs=2, metavar=("A", "B"))
    action.add_argument(
        "--cleanup",
        type=int,
        metavar="KEEP_LATEST",
        help="remove unpinned versions older than the newest KEEP_LATEST",
    )


def _report_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="evaluate a run directory: tables, AUC, ΔAUC, sample saving ratio, timings",
        description="Evaluate RUN_DIR (written by `proxal demo` or the benchmarks) and write "
        "report.md or report.html, report.json and PNG plots to --out.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/report")
    p.add_argument("--format", choices=("md", "html"), default="md")
    p = sub.add_parser(
        "compare",
        help="compare two run directories side by side (B − A per strategy)",
        description="Compare RUN_A and RUN_B per strategy: final accuracy and macro-F1, AUC, "
        "ΔAUC vs random, sample saving ratio and loop seconds, with B − A. Prints the table; "
        "with --out also writes comparison.md/.html and comparison.json.",
    )
    p.add_argument("run_a", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")
    p.add_argument("--out", type=Path, default=None, help="also write the comparison here")
    p.add_argument("--format", choices=("md", "html"), default="md")
    p.add_argument(
        "--allow-different-pools",
        action="store_true",
        help="compare the numbers even though the runs used different pools",
    )
    p.add_argument(
        "--no-asm",
        action="store_true",
        help="leave out the acquisition sequence mismatch section (runs over the same pool)",
    )


def run_report_command(args: argparse.Namespace) -> int:
    from orchestrator.evaluation import evaluate_run
    from orchestrator.report import key_table, write_report
    from orchestrator.runs import load_run

    run = load_run(args.run_dir)
    out = args.out if args.out is not None else args.run_dir / "report"
    paths = write_report(run, out, fmt=args.format)
    evaluation = evaluate_run(run)
    print(f"run {run.name}: {len(run.rounds)} rounds, {len(run.sessions)} sessions")
    print(key_table(evaluation))
    for note in evaluation["notes"]:
        print(f"note: {note}")
    print()
    for path in paths:
        print(f"wrote {path}")
    return 0


def run_compare_command(args: argparse.Namespace) -> int:
    from orchestrator.evaluation import compare_runs
    from orchestrator.report import compare_table, write_comparison
    from orchestrator.runs import load_run

    run_a, run_b = load_run(args.run_a), load_run(args.run_b)
    comparison = compare_runs(run_a, run_b, allow_different_pools=args.allow_different_pools)
    print(compare_table(comparison))
    sections: list[tuple[str, str]] = []
    if comparison["same_pool"] and not args.no_asm:
        from orchestrator.asm import GloveSpace, asm_markdown, asm_table, run_mismatch
        from proxal_runtime.errors import InvalidArgumentError

        try:  # e.g. no (strategy, seed) session in both runs: the comparison still stands
            mismatch = run_mismatch(run_a, run_b, GloveSpace())
        except InvalidArgumentError as exc:
            print(f"\nno acquisition sequence mismatch: {exc}")
        else:
            print()
            print(asm_table(mismatch))
            sections.append(("Acquisition sequence mismatch", asm_markdown(mismatch)))
    if args.out is not None:
        print()
        for path in write_comparison(
            comparison, args.out, fmt=args.format, extra_sections=sections
        ):
            print(f"wrote {path}")
    return 0


def run_encoder_command(args: argparse.Namespace) -> int:
    from orchestrator.clients import EncoderClient
    from orchestrator.progress import describe, embed_with_progress

    client = EncoderClient(args.encoder)
    if args.command == "ingest":
        reply = client.ingest_file(args.pool, args.split, args.file)
        print(
            f"{reply.pool}/{reply.split}: {reply.rows_added} rows (ids {reply.first_id}.."
            f"{reply.first_id + reply.rows_added - 1}); pool has {reply.total_rows} rows, "
            f"{len(reply.classes)} classes"
        )
    elif args.command == "embed":
        version = embed_with_progress(
            client,
            args.pool,
            backend=args.backend,
            precision=args.precision,
            model=args.model,
            batch_size=args.batch_size,
            max_length=args.max_length,
        )
        print(describe(version))
    elif args.pin or args.unpin:
        print(
            describe(
                client.pin(args.pool, args.pin) if args.pin else client.unpin(args.pool, args.unpin)
            )
        )
    elif args.delete:
        client.delete(args.pool, args.delete)
        print(f"deleted {args.pool}/{args.delete}")
    elif args.compare:
        c = client.compare(args.pool, *args.compare)
        print(
            f"rows {c.rows_a} vs {c.rows_b}, {c.common_ids} common ids, mean cosine "
            f"{c.mean_cosine:.4f} over {c.sampled} sampled rows"
        )
    elif args.cleanup is not None:
        reply = client.cleanup(args.pool, args.cleanup)
        print(f"removed {list(reply.removed) or 'nothing'}; kept {list(reply.kept)}")
    else:
        for version in client.list_versions(args.pool, include_incomplete=args.all):
            print(describe(version))
    return 0


def run_finetune_command(args: argparse.Namespace) -> int:
    from orchestrator.finetune import finetune_session, summary
    from orchestrator.plasm import PlasmConfig
    from orchestrator.successor_config import SuccessorConfig
    from proxal_runtime.settings import store_options
    from proxal_store import Store

    config = SuccessorConfig(  # checks every value before anything is read or trained
        method=args.method,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_fraction=args.validation_fraction,
        patience=args.patience,
        seed=args.seed,
        max_length=args.max_length,
        device=args.device,
    )
    plasm = None
    if args.plasm:
        plasm = PlasmConfig(
            teacher=dataclasses.replace(
                config,
                method="full",
                validation_fraction=args.plasm_heldout,
                validation_metric="accuracy",
            ),
            filter=args.plasm_filter,
            pool_sample=args.plasm_pool_sample,
            seed=args.seed,
        )
    metrics = finetune_session(
        Store(args.store, store_options(args)),
        args.session,
        args.out,
        config,
        test_split=args.test_split,
        onnx=not args.no_onnx,
        model_path=args.model,
        plasm=plasm,
    )
    print(summary(metrics, args.out))
    return 0


def run_asm_command(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import tempfile

    from orchestrator.asm import (
        GloveSpace,
        asm_document,
        asm_table,
        run_mismatch,
        transferability,
    )
    from orchestrator.clients import ProxyClient
    from orchestrator.processes import ServiceProcess
    from orchestrator.runs import load_run
    from proxal_store import Store

    run_a, run_b = load_run(args.run_a), load_run(args.run_b)
    mismatch = run_mismatch(run_a, run_b, GloveSpace(), strategies=args.strategies)
    transfer = {}
    if not args.no_transfer:
        with contextlib.ExitStack() as stack:
            address = args.proxy
            if not address:
                log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "proxy.log"
                address = stack.enter_context(
                    ServiceProcess("proxy_service", run_b.store, log_path=log)
                ).address
            proxy = ProxyClient(address)
            stack.callback(proxy.close)
            store = Store(run_b.store)
            for strategy, seed in mismatch:
                transfer[strategy, seed] = transferability(
                    proxy, store, run_a, run_b, strategy, seed
                )
    print(f"ASM: run {run_a.name!r} (A) vs {run_b.name!r} (B) on pool {run_a.pool!r}")
    print(asm_table(mismatch, transfer))
    if args.json is not None:
        document = asm_document(run_a, run_b, mismatch, transfer)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    from orchestrator.asvp import AsvpConfig
    from orchestrator.demo import DemoConfig, run_demo
    from orchestrator.simulation import LoopConfig
    from orchestrator.successor_config import SuccessorConfig
    from orchestrator.ups import UpsSchedule

    ups = None
    if args.ups_gamma:
        ups = UpsSchedule(
            gamma=args.ups_gamma,
            temperature=args.ups_temperature,
            full_rounds=args.ups_full_rounds,
            full_every=args.ups_full_every,
        )
    asvp = None
    if args.asvp_every or args.asvp_growth:
        asvp = AsvpConfig(
            every_rounds=args.asvp_every,
            growth_factor=args.asvp_growth,
            threshold=args.asvp_threshold,
            use_ped=not args.asvp_no_ped,
        )
    epochs = {} if args.successor_epochs is None else {"epochs": args.successor_epochs}
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
            ups=ups,
            asvp=asvp,
        ),
        successor_strategies=args.successor_strategies,
        successor=SuccessorConfig(method=args.successor_method, **epochs),
    )
    run_demo(config)
    return 0


def run_serve_command(args: argparse.Namespace) -> int:
    from proxal.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    from orchestrator.clients import ProxyClient
    from orchestrator.servicer import OrchestratorServicer
    from orchestrator.sessions import Sessions
    from proxal_runtime.server import serve_forever, start_or_exit
    from proxal_runtime.settings import configure_logging, server_settings, store_options
    from proxal_store import Store

    configure_logging(args.log_level)
    servicer = OrchestratorServicer(
        Sessions(Store(args.store, store_options(args)), ProxyClient(args.proxy))
    )
    name = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
    running = start_or_exit(
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
    _finetune_parser(sub)
    _serve_parser(sub)
    _asm_parser(sub)
    _encoder_parsers(sub)
    _report_parsers(sub)
    label_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the demo's service subprocesses are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.command == "demo":
            return run_demo_command(args)
        if args.command == "serve":
            return run_serve_command(args)
        if args.command == "finetune":
            return run_finetune_command(args)
        if args.command == "asm":
            return run_asm_command(args)
        if args.command == "report":
            return run_report_command(args)
        if args.command == "compare":
            return run_compare_command(args)
        if args.command in label_cli.COMMANDS:
            return label_cli.run(args)
        return run_encoder_command(args)
    except grpc.RpcError as exc:
        code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        print(f"proxal: {code}: {details}", file=sys.stderr)
        return 1
    except (ProxalError, SecurityConfigError) as exc:
        print(f"proxal: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
