"""The `proxal` commands for people and tools that label: `session create|status|list|delete`,
`labels import|export` and `label` (the terminal labeling client). They all talk to a
running `proxal serve` at `--orchestrator` (env PROXAL_ORCHESTRATOR)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from proxal.orchestrator_service.sessions.label_files import (
    EXPORT_FORMATS,
    FORMATS,
    HF,
    format_of,
    hf_members,
    parse_labels,
)
from proxal.runtime.strategies import INITIAL_BATCHES

if TYPE_CHECKING:  # imported when a command runs: `proxal --help` loads no grpc
    from proxal.orchestrator_service.rpc.client import (
        AsvpStatus,
        Client,
        Deleted,
        Session,
        Status,
        StoppingSignal,
    )
    from proxal.orchestrator_service.sessions.label_files import FileLabel
    from proxal.runtime.errors import ProxalError

COMMANDS = ("session", "labels", "label")
Sub = argparse._SubParsersAction


def default_annotator() -> str:
    """PROXAL_ANNOTATOR, else the login name made safe for an annotator name."""
    name = os.environ.get("PROXAL_ANNOTATOR") or getpass.getuser()
    return re.sub(r"[^A-Za-z0-9._@-]", "-", name)[:64] or "default"


def _client_args(p: argparse.ArgumentParser) -> None:
    env = os.environ.get("PROXAL_ORCHESTRATOR", "")
    p.add_argument(
        "--orchestrator",
        default=env,
        required=not env,
        help="address of `proxal serve`, host:port (env PROXAL_ORCHESTRATOR)",
    )
    p.add_argument(
        "--annotator",
        default=default_annotator(),
        help="who labels (env PROXAL_ANNOTATOR, else your login name)",
    )


def add_parsers(sub: Sub) -> None:
    session = sub.add_parser(
        "session", help="create, list or delete labeling sessions, or show one's status"
    )
    ops = session.add_subparsers(dest="op", required=True)
    create = ops.add_parser("create", help="create a session on an embedded pool")
    create.add_argument("session")
    create.add_argument("--pool", required=True)
    create.add_argument(
        "--strategy", default="", help="query strategy (the server lists them); default: margin"
    )
    create.add_argument("--classifier", default="", help="proxy: logreg (default), mlp or lightgbm")
    create.add_argument("--batch-size", type=int, default=10)
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--split", default="train")
    create.add_argument(
        "--classes",
        default="",
        help="comma-separated; default: the gold labels of --split (required when it has none)",
    )
    create.add_argument("--embedding-version", default="", help="default: the newest")
    create.add_argument("--lease-seconds", type=float, default=600.0)
    _method_args(create)
    status = ops.add_parser("status", help="labels, skips, leases, rounds, estimated accuracy")
    status.add_argument("session")
    status.add_argument("--json", action="store_true", help="print JSON")
    listing = ops.add_parser("list", help="every session with its pool, labels and rounds")
    listing.add_argument("--pool", default="", help="only this pool's sessions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    delete = ops.add_parser("delete", help="delete a session (its labels only with --force)")
    delete.add_argument("session")
    delete.add_argument(
        "--force", action="store_true", help="also when it has labels: they are deleted too"
    )
    for p in (create, status, listing, delete):
        _client_args(p)

    labels = sub.add_parser("labels", help="import or export a session's labels")
    ops = labels.add_subparsers(dest="op", required=True)
    imp = ops.add_parser(
        "import", help="add labels from a JSONL, CSV, Label Studio or Parquet file"
    )
    imp.add_argument("session")
    imp.add_argument("file", type=Path)
    imp.add_argument("--format", choices=FORMATS, default="", help="default: from the suffix")
    imp.add_argument("--overwrite", action="store_true", help="replace existing labels")
    exp = ops.add_parser(
        "export",
        help="write a session's labels as JSONL, CSV, Label Studio, Parquet or a Hugging Face "
        "dataset directory",
    )
    exp.add_argument("session")
    exp.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="",
        help="default: from the -o suffix, else jsonl; hf: a `datasets.load_dataset` directory",
    )
    exp.add_argument(
        "-o", "--output", type=Path, default=None, help="default: stdout; a directory for hf"
    )
    for p in (imp, exp):
        _client_args(p)

    label = sub.add_parser("label", help="label a session's items in the terminal")
    label.add_argument("session")
    _client_args(label)


CONNECT_SECONDS = 10.0  # how long a command waits for `proxal serve` before giving up


def _method_args(create: argparse.ArgumentParser) -> None:
    """The classifier spec, UPS and ASVP flags of `proxal session create` (0: defaults)."""
    create.add_argument("--c", type=float, default=0.0, help="proxy regularisation C (> 0)")
    create.add_argument("--max-iter", type=int, default=0, help="proxy iterations/epochs")
    create.add_argument("--balanced", action="store_true", help="class-balanced proxy weights")
    create.add_argument(
        "--initial-batch",
        choices=INITIAL_BATCHES,
        default="random",
        help="how to pick before two classes are labelled: random, or kmeans (k-means "
        "centres of the embeddings, the nearest item to each: a diverse first batch)",
    )
    create.add_argument(
        "--class-balanced",
        action="store_true",
        help="spread each batch over the proxy's predicted classes (round-robin)",
    )
    create.add_argument(
        "--ups", action="store_true", help="subsample the pool between full rounds (UPS)"
    )
    create.add_argument("--ups-gamma", type=float, default=0.0, help="UPS keep fraction (0, 1]")
    create.add_argument("--ups-temperature", type=float, default=0.0, help="UPS temperature")
    create.add_argument(
        "--asvp",
        action="store_true",
        help="check features in the background and refresh them from a fine-tuned encoder "
        "(needs `proxal serve --encoder`)",
    )
    create.add_argument("--asvp-every-rounds", type=int, default=None, help="default 2")
    create.add_argument("--asvp-threshold", type=float, default=None, help="LogME gap; 0.03")
    create.add_argument("--asvp-method", default="", help="lora (default), full, lp_ft, ...")
    create.add_argument("--asvp-epochs", type=int, default=0, help="fine-tune epochs; 4")


def _create(client: Client, args: argparse.Namespace) -> Session:
    """`proxal session create`: the session of the flags."""
    from proxal.orchestrator_service.rpc.client import Asvp, Ups

    asvp = (
        Asvp(
            every_rounds=args.asvp_every_rounds,
            threshold=args.asvp_threshold,
            finetune_method=args.asvp_method,
            finetune_epochs=args.asvp_epochs,
        )
        if args.asvp
        else None
    )
    return client.create_session(
        args.session,
        args.pool,
        classes=[c for c in args.classes.split(",") if c],
        strategy=args.strategy,
        classifier=args.classifier,
        batch_size=args.batch_size,
        seed=args.seed,
        split=args.split,
        embedding_version=args.embedding_version,
        lease_seconds=args.lease_seconds,
        c=args.c,
        max_iter=args.max_iter,
        balanced=args.balanced,
        ups=Ups(gamma=args.ups_gamma, temperature=args.ups_temperature) if args.ups else None,
        asvp=asvp,
        initial_batch=args.initial_batch,
        class_balanced=args.class_balanced,
    )


def open_client(address: str, annotator: str = "default") -> Client:
    """A Client of `proxal serve` at `address`, once it answers (UnavailableError after
    CONNECT_SECONDS); later calls retry through an orchestrator restart."""
    from proxal.orchestrator_service.rpc.client import Client

    client = Client(address, annotator, timeout=60.0, retry_seconds=60.0)
    try:
        client.connect(CONNECT_SECONDS)
    except BaseException:
        client.close()
        raise
    return client


def call_failed(exc: ProxalError, address: str) -> int:
    """Print a refused or failed call as one line, "proxal: STATUS: message" → the exit
    status (2 for what user input causes, as cli.main's USER_CODES, else 1). Re-raises an
    error that no call returned (cli.main prints those)."""
    from proxal.orchestrator_service.cli.main import USER_CODES
    from proxal.orchestrator_service.rpc.client import rpc_status

    status = rpc_status(exc)
    if status is None:
        raise exc
    code, details = status
    if code == "UNAVAILABLE":
        details = f"cannot reach {address} (--orchestrator); is it running there? ({details})"
    print(f"proxal: {code}: {details}", file=sys.stderr)
    return 2 if code in USER_CODES else 1


def run(args: argparse.Namespace) -> int:
    from proxal.runtime.errors import ProxalError

    # local input first: a missing import file or an unknown -o suffix needs no server
    labels = (
        parse_labels(args.file.read_bytes(), format_of(args.file, args.format))
        if (args.command == "labels" and args.op == "import")
        else None
    )
    # -o x.csv writes CSV, as `labels import` reads it back; stdout gets JSONL
    export_format = (
        args.format or ("jsonl" if args.output is None else format_of(args.output))
        if args.command == "labels" and args.op == "export"
        else ""
    )
    if export_format == HF:
        check_dataset_dir(args.output)
    try:
        with open_client(args.orchestrator, args.annotator) as client:
            if args.command == "label":
                from proxal.orchestrator_service.cli import label_tui

                return label_tui.run(client, args.session)
            if args.command == "session":
                return _session_command(client, args)
            if labels is not None:
                return _import(client, args, labels)
            return _export(client, args, export_format)
    except ProxalError as exc:
        return call_failed(exc, args.orchestrator)


def _session_command(client: Client, args: argparse.Namespace) -> int:
    """`proxal session create|list|delete|status`."""

    if args.op == "create":
        created = _create(client, args)
        extras = "".join(
            f", {name}"
            for name, settings in (("ups", created.ups), ("asvp", created.asvp))
            if settings is not None
        )
        extras += f", {created.initial_batch} initial batch" * (created.initial_batch != "random")
        extras += ", class-balanced batches" * created.class_balanced
        print(
            f"created {created.name} on {created.pool}/{created.embedding_version}: "
            f"{len(created.classes)} classes, strategy {created.strategy}, "
            f"classifier {created.classifier}{extras}"
        )
        return 0
    if args.op == "list":
        return _print_sessions(client.list_sessions(args.pool), args.json)
    if args.op == "delete":
        return _print_deleted(client.delete_session(args.session, args.force))
    return _print_status(client.status(args.session), args.json)


def _import(client: Client, args: argparse.Namespace, labels: list[FileLabel]) -> int:
    done = client.import_labels(args.session, labels, overwrite=args.overwrite)
    why = (
        f"; {done.already_labeled} already labelled: pass --overwrite to replace them"
        if done.already_labeled
        else ""
    )
    print(f"imported {done.written} of {len(labels)} labels into {args.session}{why}")
    return 0


def check_dataset_dir(output: Path | None) -> None:
    """InvalidArgumentError unless `output` can be a dataset directory (new or a directory)."""
    from proxal.runtime.errors import InvalidArgumentError

    if output is None:
        raise InvalidArgumentError("--format hf writes a directory: pass -o DIRECTORY")
    if output.exists() and not output.is_dir():
        raise InvalidArgumentError(f"-o {output}: exists and is not a directory")


def _export(client: Client, args: argparse.Namespace, fmt: str) -> int:
    data = client.export_bytes(args.session, fmt)
    if fmt == HF:  # unpack data/train.jsonl and README.md into the directory
        for name, content in hf_members(data).items():
            (args.output / name).parent.mkdir(parents=True, exist_ok=True)
            (args.output / name).write_bytes(content)
    elif args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        args.output.write_bytes(data)
    where = "stdout" if args.output is None else str(args.output)
    print(  # on stderr when the labels themselves go to stdout
        f"wrote {len(parse_labels(data, fmt))} labels of session {args.session} to {where} ({fmt})",
        file=sys.stderr if args.output is None else sys.stdout,
    )
    return 0


def _print_status(s: Status, as_json: bool) -> int:
    accuracy = s.estimated_accuracy
    classes = len(s.session.classes)
    coverage = f"{s.labeled_classes} of {classes} classes labelled"
    fields = {
        "session": s.session.name,
        "pool": s.session.pool,
        "labels": s.labels,
        "skipped": s.skipped,
        "leased": s.leased,
        "remaining": s.remaining,
        "rounds": s.rounds,
        "annotators": s.annotators,
        "embedding_version": s.embedding_version,
        "lineage": " -> ".join(s.lineage),
        "latest_version": s.latest_version,
        "class_coverage": coverage,
        "classes": classes,
        "labeled_classes": s.labeled_classes,
        "estimated_accuracy": accuracy,
        "accuracy_classes": s.accuracy_classes,
        "accuracy_note": s.accuracy_note,
        "class_counts": s.class_counts,
        "asvp": _asvp_fields(s.asvp),
        "stopping": [asdict(x) for x in s.stopping],
    }
    if as_json:
        print(json.dumps(fields, indent=1))
        return 0
    shown = {
        k: v
        for k, v in fields.items()
        if k not in ("class_counts", "classes", "labeled_classes", "accuracy_classes")
        and k not in ("asvp", "stopping")
    }
    if s.asvp.enabled:
        shown["asvp"] = _asvp_line(s.asvp)
    if accuracy is not None and s.accuracy_classes < classes:
        shown["estimated_accuracy"] = (
            f"{accuracy:.2f} on the {s.accuracy_classes} classes with 2+ labels only ({coverage})"
        )
    elif accuracy is not None:
        shown["estimated_accuracy"] = f"{accuracy:.2f} on all {s.accuracy_classes} classes"
    for key, value in shown.items():
        print(f"{key:>18}: {value}")
    counts = list(s.class_counts.items())
    top = ", ".join(f"{label} {count}" for label, count in counts[:10])
    print(f"{'class_counts':>18}: {top}{' ...' if len(counts) > 10 else ''}")
    for x in s.stopping:
        print(f"{x.name:>18}: {_stopping_line(x)}")
    return 0


def _stopping_line(x: StoppingSignal) -> str:
    """A stopping signal for people: verdict, value against threshold, the rule, the note."""
    if x.value is None:
        return f"not yet ({x.note}); rule: {x.rule}"
    verdict = "STOP" if x.stop else "go on"
    return f"{verdict}: {x.value:.4f} (threshold {x.threshold:g}; {x.rule}); {x.note}"


def _asvp_fields(a: AsvpStatus) -> dict[str, object] | None:
    """Status's ASVP part as plain JSON (None: the session has no ASVP)."""
    if not a.enabled:
        return None
    c = a.last_check
    last = (
        None
        if c is None
        else {
            "round": c.round,
            "labels": c.labels,
            "action": c.action,
            "version_before": c.version_before,
            "version_after": c.version_after,
            "logme_current": c.logme_current,
            "logme_finetuned": c.logme_finetuned,
            "gap": c.gap,
            "seconds": c.seconds,
            "reason": c.reason,
        }
    )
    return {
        "running": a.running,
        "phase": a.phase,
        "checks": a.checks,
        "failed_checks": a.failed_checks,
        "next_due": a.next_due,
        "last_check": last,
    }


def _asvp_line(a: AsvpStatus) -> str:
    """One line: what ASVP is doing, its last check and when the next is due."""
    now = f"running ({a.phase})" if a.running else "idle"
    last = "no check yet"
    c = a.last_check
    if c is not None:
        gap = "" if c.gap is None else f", gap {c.gap:+.3f}"
        why = f" ({c.reason})" if c.reason else ""
        last = f"last check {c.action} at round {c.round}{gap} in {c.seconds:.0f} s{why}"
    return f"{now}; {last}; next {a.next_due or 'not scheduled'}"


def _print_sessions(sessions: list[Session], as_json: bool) -> int:
    rows = [
        {
            "session": x.name,
            "pool": x.pool,
            "split": x.split,
            "strategy": x.strategy,
            "classes": len(x.classes),
            "labels": x.labels,
            "rounds": x.rounds,
            "created_at": x.created_at,
            "problem": x.problem,
        }
        for x in sessions
    ]
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no sessions")
        return 0
    print(f"{'session':<24} {'pool':<16} {'strategy':<16} {'classes':>7} {'labels':>7} rounds")
    for r in rows:
        problem = f"  ({r['problem']})" if r["problem"] else ""
        print(
            f"{r['session']:<24} {r['pool']:<16} {r['strategy']:<16} {r['classes']:>7} "
            f"{r['labels']:>7} {r['rounds']:>6}{problem}"
        )
    return 0


def _print_deleted(d: Deleted) -> int:
    print(
        f"deleted session {d.session}: {d.labels} labels and {d.skipped} skips "
        f"({d.label_events} label-log events), {d.lease_events} lease events, {d.rounds} rounds"
    )
    return 0
