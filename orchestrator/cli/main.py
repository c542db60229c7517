"""The `proxal` command: `demo` (the main job), `serve` (OrchestratorService), `finetune` (a
successor from a session's labels, optionally with PLASM pseudo-labels, as a job of `serve`),
`report` (a run directory's evaluation as Markdown/HTML, JSON and plots), `compare` (two runs
side by side), `asm` (acquisition sequence mismatch and dataset transfer between two runs),
the encoder client commands `ingest`, `embed` and `versions`, the labeling commands `session`,
`labels` and `label` (orchestrator/cli/label.py), and `ls-backend` (Label Studio's ML backend)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeAlias

from proxal.orchestrator_service.cli import db as db_cli
from proxal.orchestrator_service.cli import label as label_cli
from proxal.orchestrator_service.cli import ls_backend as ls_cli
from proxal.runtime.errors import InvalidArgumentError, ProxalError

if TYPE_CHECKING:
    from proxal.orchestrator_service.engine.feature_checks import AsvpRuntime
    from proxal.orchestrator_service.engine.simulation import LoopConfig
    from proxal.orchestrator_service.rpc.clients import EncoderClient
    from proxal.orchestrator_service.successor.config import SuccessorConfig
    from proxal.store import Store

# Start-up stays under half a second: this module imports no grpc, numpy, lance or
# torch, only the chosen command's parser is built in full, and each command imports
# what it needs when it runs (bench/cli.py measures it; a test keeps --help light).
Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
HELP = {
    "demo": "active learning on Banking77, end to end (simulate's preset)",
    "simulate": "would active learning help on my data? simulate it on a labelled file",
    "up": "start the encoder, N proxy replicas and the orchestrator on loopback",
    "finetune": "fine-tune a successor on a labeling session's labels (a job of proxal serve)",
    "serve": "run OrchestratorService (labeling sessions)",
    "asm": "acquisition sequence mismatch between two runs, and ΔAUC of dataset transfer",
    "ingest": "upload a pool file (JSONL, JSON, CSV, TSV, Parquet or text) as a pool split",
    "embed": "embed a pool as a new version",
    "versions": "list and manage embedding versions",
    "report": "evaluate a run directory: tables, AUC, ΔAUC, sample saving ratio, timings",
    "compare": "compare two run directories side by side (B − A per strategy)",
    "db": db_cli.HELP,
    "ls-backend": ls_cli.HELP,
}
# gRPC status codes that user input causes (a wrong name, value, state or address): exit 2.
USER_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "RESOURCE_EXHAUSTED",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "UNAVAILABLE",
    }
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the subcommand parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _csv(kind: Callable[[str], object] = str) -> Callable[[str], tuple[object, ...]]:
    """An argparse type for comma-separated values: "a,b" -> ("a", "b")."""
    return lambda value: tuple(kind(x) for x in value.split(",") if x)


def _loop_args(p: argparse.ArgumentParser, successor_strategies: tuple[str, ...]) -> None:
    """The loop's flags, shared by `demo` and `simulate`: strategies x seeds, budget, UPS,
    ASVP, random's extra budget and the successors."""
    from proxal.orchestrator_service.engine.simulation import LoopConfig
    from proxal.runtime.strategies import INITIAL_BATCHES

    loop = LoopConfig()
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--strategies", type=_csv(), default=loop.strategies)
    p.add_argument("--seeds", type=_csv(int), default=loop.seeds)
    p.add_argument(
        "--initial",
        type=int,
        default=loop.initial_size,
        help="random initial labels (0: a cold start)",
    )
    p.add_argument("--batch-size", type=int, default=loop.batch_size)
    p.add_argument("--rounds", type=int, default=loop.rounds)
    p.add_argument(
        "--initial-batch",
        choices=INITIAL_BATCHES,
        default=loop.initial_batch,
        help="how batches are picked before two classes are labelled (with --initial 0: the "
        "first batch); kmeans = k-means centres of the embeddings, the nearest item to each",
    )
    p.add_argument(
        "--class-balanced",
        action="store_true",
        help="spread each batch over the proxy's predicted classes (round-robin)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="label budget: sets --rounds to (BUDGET - --initial) / --batch-size, rounded down",
    )
    p.add_argument(
        "--random-factor",
        type=float,
        default=2.0,
        help="random sampling runs to this x the budget, so each strategy's sample saving "
        "ratio is measured (default 2; 1 = the same budget)",
    )
    _ups_asvp_args(p)
    _successor_args(p, successor_strategies)


def _ups_asvp_args(p: argparse.ArgumentParser) -> None:
    """The loop's UPS and ASVP flags."""
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


def _successor_args(p: argparse.ArgumentParser, successor_strategies: tuple[str, ...]) -> None:
    """The loop's successor flags and the quick-run row limits."""
    from proxal.orchestrator_service.successor.config import METHODS

    p.add_argument(
        "--successor-method",
        choices=METHODS,
        default="full",
        help="how successors are fine-tuned (with ASVP on, its LP-FT/FT rule decides)",
    )
    p.add_argument(
        "--successor-strategies",
        type=_csv(),
        default=successor_strategies,
        help="fine-tune a successor on the labels of these strategies (first of --seeds) at "
        "the budget; empty to skip",
    )
    p.add_argument("--successor-epochs", type=int, default=None, help="default: 6")
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use N evenly spaced training rows (quick runs)",
    )
    p.add_argument("--test-limit", type=int, default=None, help="use N evenly spaced test rows")


def _demo_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "demo",
        help=HELP["demo"],
        description="`proxal simulate` preset on the bundled Banking77 subset (10,003 train, "
        "3,080 test texts), with successors fine-tuned on margin's and random's labels.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("proxal-demo"),
        help="output directory: store, logs, report.json, learning_curve.png",
    )
    _loop_args(p, ("margin", "random"))


def _simulate_parser(sub: Sub) -> None:
    from proxal.orchestrator_service.sessions.pool_files import FORMATS

    p = sub.add_parser(
        "simulate",
        help=HELP["simulate"],
        description="Would active learning help on my data? Ingest and embed a labelled file, "
        "run simulated active learning (the gold labels answer) for each strategy x seed, "
        "and write the learning curves, AUC, ΔAUC and the sample saving ratio of each "
        "strategy vs random to --out (report/report.md, report.json, run/).",
    )
    p.add_argument(
        "--train",
        type=Path,
        required=True,
        help="labelled file: JSONL, JSON, CSV, "
        "TSV or Parquet (format from the suffix, or --format)",
    )
    test = p.add_mutually_exclusive_group()
    test.add_argument("--test", type=Path, default=None, help="labelled test file")
    test.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="without --test: hold out this fraction of --train as the test split "
        "(seeded; default 0.2)",
    )
    p.add_argument("--text-field", default="text", help="the field or column with the texts")
    p.add_argument("--label-field", default="label", help="the field or column with the labels")
    p.add_argument("--format", choices=FORMATS, default="", help="default: from the suffix")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("proxal-simulate"),
        help="output directory: store, logs, report.json, run/, report/",
    )
    p.add_argument(
        "--pool",
        default="",
        help="pool name in the store (default: the file's name and a hash of its rows)",
    )
    _loop_args(p, ())


def _up_parser(sub: Sub) -> None:
    from proxal.runtime.settings import DEFAULT_STORE

    p = sub.add_parser(
        "up",
        help=HELP["up"],
        description="Start the encoder (port 50051), N proxy replicas (the first on 50052, "
        "the others on free ports) and `proxal serve` over them (50053) on 127.0.0.1, wait "
        "until each serves, print the addresses and the next commands, and stop them all on "
        "Ctrl-C or SIGTERM. If one of them exits, say which, stop the others and exit 1.",
    )
    p.add_argument(
        "--store",
        default=os.environ.get("PROXAL_STORE", DEFAULT_STORE),
        help="store directory (created by the encoder if missing; env PROXAL_STORE)",
    )
    p.add_argument("--proxies", type=int, default=1, help="proxy replicas (default 1)")
    p.add_argument(
        "--free-ports", action="store_true", help="every service on a free port (printed)"
    )
    p.add_argument("--backend", default="", help="the encoder's backend: torch or onnx")
    p.add_argument(
        "--log-dir", type=Path, default=None, help="services' logs (default: a temporary dir)"
    )


def _serve_parser(sub: Sub) -> None:
    from proxal.orchestrator_service.rpc.sharding import DEFAULT_SHARD_ABOVE
    from proxal.runtime.settings import add_common_args

    p = sub.add_parser("serve", help=HELP["serve"])
    add_common_args(p, "PROXAL_ORCHESTRATOR")
    p.add_argument(
        "--proxy",
        default=os.environ.get("PROXAL_ORCHESTRATOR_PROXY", ""),
        required="PROXAL_ORCHESTRATOR_PROXY" not in os.environ,
        help="proxy replicas: host:port, a list host:port,host:port, or dns:///name:port "
        "(resolved at start-up, after a replica fails and every 30 s); a call that fails on one "
        "replica is retried on the others (env PROXAL_ORCHESTRATOR_PROXY)",
    )
    p.add_argument(
        "--shard-above",
        type=_shard_above,
        default=os.environ.get("PROXAL_ORCHESTRATOR_SHARD_ABOVE", str(DEFAULT_SHARD_ABOVE)),
        metavar="N",
        help="select over one replica up to N candidates, and over every replica (one shard "
        f"each, merged) above N (default {DEFAULT_SHARD_ABOVE}; env "
        "PROXAL_ORCHESTRATOR_SHARD_ABOVE)",
    )
    _serve_encoder_args(p)
    db_cli.add_db_arg(p)


def _shard_above(value: str) -> int:
    """--shard-above: a whole number >= 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            f"must be a whole number >= 1 (also in PROXAL_ORCHESTRATOR_SHARD_ABOVE), got {value!r}"
        )
    return number


def _serve_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoder",
        default=os.environ.get("PROXAL_ORCHESTRATOR_ENCODER", ""),
        help="encoder service address (host:port), for sessions with ASVP feature checks; "
        "without it, ASVP in a session is refused (env PROXAL_ORCHESTRATOR_ENCODER)",
    )
    p.add_argument(
        "--checkpoint-root",
        default=os.environ.get("PROXAL_ORCHESTRATOR_CHECKPOINT_ROOT", "."),
        help="the encoder service's --checkpoint-root (a directory both can reach): ASVP "
        "writes its fine-tuned checkpoints there (env PROXAL_ORCHESTRATOR_CHECKPOINT_ROOT)",
    )


def _finetune_parser(sub: Sub) -> None:
    from proxal.orchestrator_service.successor.config import JOB_METHODS, SuccessorConfig

    # The field defaults, read without building a config (which would load torch for the device).
    default = {f.name: f.default for f in dataclasses.fields(SuccessorConfig)}
    env = os.environ.get("PROXAL_ORCHESTRATOR", "")
    p = sub.add_parser(
        "finetune",
        help=HELP["finetune"],
        description="Ask `proxal serve` to fine-tune a successor (MiniLM-L6 by default) on the "
        "labels SESSION acquired, follow the job's progress, and print where its artifacts "
        "are: <store>/models/SESSION/JOB/ with model.safetensors, model.onnx, labels.json, "
        "config.json, the tokenizer and metrics.json (test scores on the pool's test split).",
    )
    p.add_argument("session", help="the labeling session whose labels to train on")
    p.add_argument(
        "--orchestrator",
        default=env,
        required=not env,
        help="address of `proxal serve`, host:port (env PROXAL_ORCHESTRATOR)",
    )
    p.add_argument(
        "--method",
        choices=JOB_METHODS,
        default=default["method"],
        help="what to train; auto: ASVP's rule picks lp_ft or full",
    )
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
    p.add_argument(
        "--device",
        default=default["device"],
        help="auto (cuda when the orchestrator has one), cpu, cuda or cuda:N",
    )
    p.add_argument(
        "--time-budget", type=float, default=0.0, help="stop training after S seconds (0: none)"
    )
    p.add_argument(
        "--test-split",
        default="test",
        help="pool split whose gold labels score the successor (skipped when it has none)",
    )
    p.add_argument("--no-onnx", action="store_true", help="do not write model.onnx")
    p.add_argument(
        "--model",
        default="",
        help="the successor's architecture: a Hugging Face encoder checkpoint directory on the "
        "orchestrator's machine (default: the bundled MiniLM-L6); it need not be the model "
        "that acquired the labels",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="print the job id and return at once, without following the job",
    )
    _plasm_args(p)


def _plasm_args(p: argparse.ArgumentParser) -> None:
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
        default=0,
        help="pseudo-label at most N unlabeled texts (a seeded sample; default: all)",
    )
    p.add_argument(
        "--plasm-heldout",
        type=float,
        default=0.2,
        help="fraction of the labels the teacher holds out to score itself",
    )


def _asm_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "asm",
        help=HELP["asm"],
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


def _encoder_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoder",
        default=os.environ.get("PROXAL_ENCODER_ADDRESS", "127.0.0.1:50051"),
        help="encoder service address (env PROXAL_ENCODER_ADDRESS)",
    )


def _ingest_parser(sub: Sub) -> None:
    from proxal.orchestrator_service.sessions.pool_files import FORMATS

    p = sub.add_parser(
        "ingest",
        help=HELP["ingest"],
        description="Read FILE, check every row, and upload it to the encoder as one split "
        "of POOL. The format comes from the suffix (.jsonl, .json: an array of objects, .csv, "
        ".tsv, .parquet, .txt: one text per line) or --format.",
    )
    _encoder_arg(p)
    p.add_argument("pool")
    p.add_argument("file", type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--format", choices=FORMATS, default="", help="default: from the suffix")
    p.add_argument("--text-field", default="text", help="the field or column with the texts")
    p.add_argument(
        "--label-field",
        default="label",
        help="the field or column with gold labels (default 'label'; a pool without one is "
        "unlabeled)",
    )
    p.add_argument(
        "--id-field",
        default="",
        help="the field or column with your own row ids: checked unique, and a map from "
        "them to proxal's ids is written to FILE.proxal-ids.csv",
    )


def _embed_parser(sub: Sub) -> None:
    p = sub.add_parser("embed", help=HELP["embed"])
    _encoder_arg(p)
    p.add_argument("pool")
    p.add_argument("--model", default="", help="minilm-l6 (default) or minilm-l3")
    p.add_argument("--backend", default="", help="torch or onnx (default: the server's)")
    p.add_argument(
        "--precision",
        default="",
        help="fp32, fp16, bf16 or int8 (default: the encoder machine's; docs/encoder_precision.md)",
    )
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--max-length", type=int, default=0)


def _versions_parser(sub: Sub) -> None:
    p = sub.add_parser("versions", help=HELP["versions"])
    _encoder_arg(p)
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


def _report_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "report",
        help=HELP["report"],
        description="Evaluate RUN_DIR (written by `proxal demo` or the benchmarks) and write "
        "report.md or report.html, report.json and PNG plots to --out.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/report")
    p.add_argument("--format", choices=("md", "html"), default="md")


def _compare_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "compare",
        help=HELP["compare"],
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
    from proxal.orchestrator_service.analysis.evaluation import evaluate_run
    from proxal.orchestrator_service.analysis.report import key_table, write_report
    from proxal.orchestrator_service.analysis.runs import load_run

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
    from proxal.orchestrator_service.analysis.evaluation import compare_runs
    from proxal.orchestrator_service.analysis.report import compare_table, write_comparison
    from proxal.orchestrator_service.analysis.runs import load_run

    run_a, run_b = load_run(args.run_a), load_run(args.run_b)
    comparison = compare_runs(run_a, run_b, allow_different_pools=args.allow_different_pools)
    print(compare_table(comparison))
    sections: list[tuple[str, str]] = []
    if comparison["same_pool"] and not args.no_asm:
        from proxal.orchestrator_service.analysis.asm import (
            GloveSpace,
            asm_markdown,
            asm_table,
            run_mismatch,
        )
        from proxal.runtime.errors import InvalidArgumentError

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
    from proxal.orchestrator_service.rpc.clients import EncoderClient
    from proxal.orchestrator_service.rpc.progress import describe, embed_with_progress

    client = EncoderClient(args.encoder)
    if args.command == "ingest":
        return _ingest(client, args)
    if args.command == "embed":
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


def _ingest(client: EncoderClient, args: argparse.Namespace) -> int:
    """Read and check the file here (naming it when it is missing or malformed), upload it,
    and write the id map when --id-field names the file's own ids."""
    from proxal.orchestrator_service.sessions.pool_files import Fields, read_pool_file

    fields = Fields(text=args.text_field, label=args.label_field, id=args.id_field)
    rows = read_pool_file(args.file, args.format, fields)
    reply = client.ingest(args.pool, args.split, rows)
    if rows.note:
        print(f"note: {rows.note}")
    print(
        f"{reply.pool}/{reply.split}: {reply.rows_added} rows (ids {reply.first_id}.."
        f"{reply.first_id + reply.rows_added - 1}) from {args.file} ({rows.format}); pool has "
        f"{reply.total_rows} rows, {len(reply.classes)} classes"
    )
    if rows.ids:
        id_map = args.file.with_name(args.file.name + ".proxal-ids.csv")
        _write_id_map(id_map, args.id_field, rows.ids, reply.first_id)
        print(f"wrote the map from {args.id_field!r} to proxal ids to {id_map}")
    return 0


def _write_id_map(path: Path, id_field: str, ids: list[str], first_id: int) -> None:
    """CSV of (the file's own id (n,), proxal's id): row i of the file got first_id + i."""
    import csv

    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([id_field, "proxal_id"])
        writer.writerows((own, first_id + i) for i, own in enumerate(ids))


def _open_store(args: argparse.Namespace) -> Store:
    """The existing store at --store: NotFoundError naming the path if there is none."""
    from proxal.runtime.settings import store_options
    from proxal.store import Store

    return Store(args.store, store_options(args), create=False, db=args.db)


def run_finetune_command(args: argparse.Namespace) -> int:
    from proxal.orchestrator_service.cli.finetune import train_and_watch

    return train_and_watch(args)


def run_asm_command(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import tempfile

    from proxal.orchestrator_service.analysis.asm import (
        GloveSpace,
        asm_document,
        asm_table,
        run_mismatch,
        transferability,
    )
    from proxal.orchestrator_service.analysis.runs import load_run
    from proxal.orchestrator_service.rpc.clients import ProxyClient
    from proxal.orchestrator_service.rpc.processes import ServiceProcess
    from proxal.store import Store

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
            store = Store(run_b.store, create=False)
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


def _loop_config(args: argparse.Namespace) -> LoopConfig:
    """LoopConfig from the loop's flags (`_loop_args`)."""
    from proxal.orchestrator_service.engine.simulation import LoopConfig
    from proxal.orchestrator_service.engine.ups import UpsSchedule

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
        from proxal.orchestrator_service.engine.asvp import (
            AsvpConfig,  # torch: only when ASVP is asked for
        )

        asvp = AsvpConfig(
            every_rounds=args.asvp_every,
            growth_factor=args.asvp_growth,
            threshold=args.asvp_threshold,
            use_ped=not args.asvp_no_ped,
        )
    rounds = args.rounds
    if args.budget is not None:
        if args.batch_size < 1 or args.budget < args.initial:
            raise InvalidArgumentError(
                f"--budget {args.budget} must be at least --initial {args.initial} "
                "(and --batch-size >= 1)"
            )
        rounds = (args.budget - args.initial) // args.batch_size
    return LoopConfig(
        strategies=args.strategies,
        seeds=args.seeds,
        initial_size=args.initial,
        batch_size=args.batch_size,
        rounds=rounds,
        ups=ups,
        asvp=asvp,
        initial_batch=args.initial_batch,
        class_balanced=args.class_balanced,
    )


def _successor_config(args: argparse.Namespace) -> SuccessorConfig:
    from proxal.orchestrator_service.successor.config import SuccessorConfig

    epochs = {} if args.successor_epochs is None else {"epochs": args.successor_epochs}
    return SuccessorConfig(method=args.successor_method, **epochs)


def run_demo_command(args: argparse.Namespace) -> int:
    from proxal.orchestrator_service.demo.run import DemoConfig, run_demo

    config = DemoConfig(
        out_dir=args.out,
        backend=args.backend,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        loop=_loop_config(args),
        successor_strategies=args.successor_strategies,
        successor=_successor_config(args),
        random_factor=args.random_factor,
    )
    run_demo(config)
    return 0


def run_simulate_command(args: argparse.Namespace) -> int:
    from proxal.orchestrator_service.demo.simulate import DataSource, SimulateConfig, run_simulate
    from proxal.orchestrator_service.sessions.pool_files import Fields

    config = SimulateConfig(
        data=DataSource(
            train=args.train,
            test=args.test,
            test_fraction=args.test_fraction,
            fields=Fields(text=args.text_field, label=args.label_field),
            fmt=args.format,
            train_limit=args.train_limit,
            test_limit=args.test_limit,
        ),
        out_dir=args.out,
        pool=args.pool,
        backend=args.backend,
        loop=_loop_config(args),
        random_factor=args.random_factor,
        successor_strategies=args.successor_strategies,
        successor=_successor_config(args),
    )
    run_simulate(config)
    return 0


def run_up_command(args: argparse.Namespace) -> int:
    from proxal.orchestrator_service.cli.up import UpConfig, run_up
    from proxal.runtime.errors import UnavailableError

    config = UpConfig(
        store=args.store,
        proxies=args.proxies,
        free_ports=args.free_ports,
        log_dir=args.log_dir,
        backend=args.backend,
    )
    try:
        run_up(config, say=lambda text: print(text, flush=True))
    except UnavailableError as exc:  # a service did not start, or exited: not the user's input
        print(f"proxal up: {exc}", file=sys.stderr)
        return 1
    return 0


def run_serve_command(args: argparse.Namespace) -> int:
    from proxal.orchestrator_service.rpc.servicer import serve
    from proxal.orchestrator_service.rpc.sharding import make_selector
    from proxal.orchestrator_service.sessions.live import Sessions
    from proxal.runtime.settings import configure_logging, server_settings

    configure_logging(args.log_level)
    selector = make_selector(args.proxy, args.shard_above)  # a malformed --proxy stops here
    asvp = _asvp_runtime(args)
    store = _open_store(args)  # before anything binds: a mistyped --store stops here
    store.database()  # and an unreachable database, or one on a newer schema
    serve(server_settings(args), Sessions(store, selector, asvp=asvp), selector.replicas)
    return 0


def _asvp_runtime(args: argparse.Namespace) -> AsvpRuntime | None:
    """What live ASVP checks need when `serve --encoder` is given (else None)."""
    from proxal.orchestrator_service.engine.feature_checks import AsvpRuntime
    from proxal.orchestrator_service.rpc.clients import EncoderClient

    if not args.encoder:
        return None
    root = Path(args.checkpoint_root).expanduser().resolve()
    if not root.is_dir():
        raise InvalidArgumentError(
            f"--checkpoint-root {args.checkpoint_root!r} is not a directory: pass the encoder "
            "service's --checkpoint-root"
        )
    return AsvpRuntime(EncoderClient(args.encoder), root)


_PARSERS: dict[str, Callable[[Sub], None]] = {
    "db": db_cli.add_parser,
    "demo": _demo_parser,
    "simulate": _simulate_parser,
    "up": _up_parser,
    "finetune": _finetune_parser,
    "serve": _serve_parser,
    "asm": _asm_parser,
    "ingest": _ingest_parser,
    "embed": _embed_parser,
    "versions": _versions_parser,
    "report": _report_parser,
    "compare": _compare_parser,
    "ls-backend": ls_cli.add_parser,
}
_RUN: dict[str, Callable[[argparse.Namespace], int]] = {
    "db": db_cli.run,
    "demo": run_demo_command,
    "simulate": run_simulate_command,
    "up": run_up_command,
    "serve": run_serve_command,
    "finetune": run_finetune_command,
    "asm": run_asm_command,
    "report": run_report_command,
    "compare": run_compare_command,
    "ls-backend": ls_cli.run,
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The `proxal` parser; only the command named in `argv` gets its arguments (others
    are listed with their help), so building it imports nothing heavy."""
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser: argparse.ArgumentParser = _Parser(prog="proxal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add_parser in _PARSERS.items():
        if name == chosen:
            add_parser(sub)
        else:
            sub.add_parser(name, help=HELP[name])
    label_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LANCE_LOG", "error")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the demo's service subprocesses are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.command in label_cli.COMMANDS:
            return label_cli.run(args)
        return _RUN.get(args.command, run_encoder_command)(args)
    except ProxalError as exc:
        print(f"proxal: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # a settings helper's message (e.g. --store-option, TLS files)
        if not isinstance(exc.code, str) or args.command == "serve":
            raise  # serve's start-up refusals (a busy port) exit 1, like the other servers
        print(exc.code if exc.code.startswith("proxal") else f"proxal: {exc.code}", file=sys.stderr)
        return 2
    except Exception as exc:
        error = _error_line(exc, args)
        if error is None:  # a bug: keep its traceback
            raise
        print(f"proxal: {error[0]}", file=sys.stderr)
        return error[1]


def _error_line(exc: Exception, args: argparse.Namespace) -> tuple[str, int] | None:
    """(one line, exit status) for a gRPC error, a bad security setting or an OS error on
    a path the user gave; None for anything else."""
    grpc = sys.modules.get("grpc")  # an RpcError means grpc is loaded: never import it here
    security = sys.modules.get("proxal.runtime.security")
    if grpc is not None and isinstance(exc, grpc.RpcError):
        code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code == "UNAVAILABLE":
            details = f"cannot reach {_server(args)}; is it running there? ({details})"
        return f"{code}: {details}", 2 if code in USER_CODES else 1
    if security is not None and isinstance(exc, security.SecurityConfigError):
        return str(exc), 2
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}", 2
    return None


def _server(args: argparse.Namespace) -> str:
    """The address the command talks to, with the flag that sets it."""
    for flag in ("encoder", "orchestrator", "proxy"):
        if getattr(args, flag, ""):
            return f"{getattr(args, flag)} (--{flag})"
    return "the service"


if __name__ == "__main__":
    sys.exit(main())
