"""`proxal simulate`: would active learning help on my data? (`proxal demo` is its preset.)

Reads a labelled train file (JSONL, JSON, CSV, TSV or Parquet) and a test file or a held-out
fraction of the train file, starts the encoder and proxy services as subprocesses on
loopback, ingests and embeds the rows into a store under `out_dir`, runs simulated active
learning (gold labels play the annotator) for every strategy x seed, optionally fine-tunes
successors on what some strategies acquired, and writes:

    out_dir/report.json         learning curves, AUC, final scores, every round, successors
    out_dir/learning_curve.png  accuracy and macro-F1 curves
    out_dir/run/                the run directory (`proxal report`, `compare`, `asm`)
    out_dir/report/report.md    its report: AUC, ΔAUC vs random, sample saving ratio (SSR)

Random runs to `random_factor` (2) x the label budget, so that the SSR of each strategy at
its last budget (how many labels random needs to match it, over how many it used) is
measured rather than a lower bound.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from proxal.orchestrator_service.engine.simulation import LoopConfig, SimulationResult
from proxal.orchestrator_service.sessions.pool_files import Fields, PoolFile, read_pool_file
from proxal.orchestrator_service.successor.config import SuccessorConfig
from proxal.runtime.errors import InvalidArgumentError

if TYPE_CHECKING:
    from proxal.orchestrator_service.analysis.evaluation import SavingRatio
    from proxal.orchestrator_service.analysis.runs import Run, SuccessorRow
    from proxal.orchestrator_service.engine.simulation import PoolData
    from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient
    from proxal.store import Store

DEFAULT_TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the seeded shuffle that holds out --test-fraction of the train file


@dataclass(frozen=True)
class DataSource:
    """Where the pool's rows come from: a train file, and a test file or the fraction of
    the train rows held out as test; `*_limit` keeps N evenly spaced rows (quick runs)."""

    train: Path
    test: Path | None = None
    test_fraction: float | None = None  # None: DEFAULT_TEST_FRACTION when there is no test
    fields: Fields = field(default_factory=Fields)
    fmt: str = ""  # --format for both files; default: from each suffix
    train_limit: int | None = None
    test_limit: int | None = None
    name: str = ""  # the dataset's name in reports; default: the file's folder/stem
    licence: str = ""

    def validate(self) -> None:
        if self.test is not None and self.test_fraction is not None:
            raise InvalidArgumentError("pass either --test FILE or --test-fraction F, not both")
        f = self.test_fraction
        if f is not None and not (math.isfinite(f) and 0.0 < f < 1.0):
            raise InvalidArgumentError(
                f"--test-fraction must be between 0 and 1 (exclusive), got {f:g}"
            )
        for flag, limit in (("--train-limit", self.train_limit), ("--test-limit", self.test_limit)):
            if limit is not None and limit < 1:
                raise InvalidArgumentError(f"{flag} must be >= 1, got {limit}")


@dataclass(frozen=True)
class SimulateConfig:
    """One `proxal simulate` run; `pool` empty names the pool after the inputs (so the same
    inputs reuse their embeddings in the same `out_dir`, and other inputs get a new pool)."""

    data: DataSource
    out_dir: Path = Path("proxal-simulate")
    pool: str = ""
    backend: str = "torch"
    loop: LoopConfig = field(default_factory=LoopConfig)
    random_factor: float = 2.0  # random runs to this x the label budget (>= 1)
    successor_strategies: tuple[str, ...] = ()
    successor: SuccessorConfig = field(default_factory=SuccessorConfig)
    run_prefix: str = "simulate"

    @property
    def budget(self) -> int:
        return self.loop.initial_size + self.loop.rounds * self.loop.batch_size


@dataclass(frozen=True)
class Splits:
    """The rows to ingest: the train and test split, read and checked."""

    train: PoolFile
    test: PoolFile
    note: str = ""  # how the test split was made


@dataclass
class SimulateOutcome:
    """What a run produced: report.json's document, the SSR per strategy at the label
    budget, and the paths written."""

    doc: dict[str, Any]
    ssr: dict[str, SavingRatio]
    report_dir: Path
    report: Path
    run_dir: Path
    closing_note: str


# ---------------------------------------------------------------------------------------
# reading the inputs


def _labelled(rows: PoolFile, fields: Fields, flag: str) -> PoolFile:
    """`rows` if every row has a gold label, else InvalidArgumentError naming the field."""
    missing = sum(1 for label in rows.labels if label is None)
    if missing == len(rows.labels):
        raise InvalidArgumentError(
            f"{rows.path} has no gold labels in a {fields.label!r} field: simulate needs a "
            f"label on every row; pass --label-field NAME (the field that holds them)"
        )
    if missing:
        first = next(i for i, label in enumerate(rows.labels) if label is None) + 1
        raise InvalidArgumentError(
            f"{rows.path}: {missing} of {len(rows.labels)} rows have no {fields.label!r} "
            f"label (the first is row {first}); simulate needs a label on every {flag} row"
        )
    return rows


def _take(rows: PoolFile, index: Sequence[int]) -> PoolFile:
    """The rows at `index`, in that order."""
    return replace(
        rows,
        texts=[rows.texts[i] for i in index],
        labels=[rows.labels[i] for i in index],
        ids=[rows.ids[i] for i in index] if rows.ids else [],
    )


def evenly_spaced(rows: PoolFile, limit: int | None) -> PoolFile:
    """`limit` evenly spaced rows (files are often sorted by label, so a prefix would hold
    only a few classes); all rows when `limit` is None."""
    n = len(rows.texts)
    if limit is None or limit >= n:
        return rows
    return _take(rows, [i * n // limit for i in range(limit)])


def read_splits(source: DataSource) -> Splits:
    """Read, check and split the inputs (see DataSource); errors name the file and flag."""
    source.validate()
    train = _labelled(
        read_pool_file(source.train, source.fmt, source.fields), source.fields, "train"
    )
    note = ""
    if source.test is not None:
        test = _labelled(
            read_pool_file(source.test, source.fmt, source.fields), source.fields, "test"
        )
    else:
        fraction = source.test_fraction or DEFAULT_TEST_FRACTION
        n = len(train.texts)
        n_test = round(n * fraction)
        if n_test < 1 or n - n_test < 2:
            raise InvalidArgumentError(
                f"{source.train} has {n} rows: too few to hold out --test-fraction {fraction:g} "
                "as a test split and keep 2+ training rows; pass --test FILE or more rows"
            )
        order = np.random.default_rng(SPLIT_SEED).permutation(n)
        test = _take(train, sorted(order[:n_test].tolist()))
        train = _take(train, sorted(order[n_test:].tolist()))
        note = (
            f"test split: {n_test} of {n} rows of {source.train} held out (seeded, "
            f"--test-fraction {fraction:g})"
        )
    train, test = evenly_spaced(train, source.train_limit), evenly_spaced(test, source.test_limit)
    if len(set(train.labels)) < 2:
        raise InvalidArgumentError(
            f"{source.train}: the training rows have {len(set(train.labels))} class in "
            f"{source.fields.label!r}; active learning needs 2 or more (is --label-field right?)"
        )
    return Splits(train, test, note)


def check_budget(config: SimulateConfig, train_rows: int) -> None:
    """InvalidArgumentError naming the flag when a strategy is unknown, or the loop's budget
    does not fit the rows."""
    from proxal.runtime.strategies import STRATEGIES

    for strategy in config.loop.strategies:
        if strategy not in STRATEGIES:
            raise InvalidArgumentError(
                f"unknown strategy {strategy!r} in --strategies; valid strategies: "
                + ", ".join(STRATEGIES)
            )
    try:
        config.loop.validate(train_rows)
    except InvalidArgumentError:
        loop = config.loop
        if config.budget <= train_rows:
            raise
        raise InvalidArgumentError(
            f"too few rows: the label budget {config.budget} (--initial {loop.initial_size} + "
            f"--rounds {loop.rounds} x --batch-size {loop.batch_size}) exceeds the "
            f"{train_rows} training rows; lower --rounds, --batch-size or --initial"
        ) from None
    if not (math.isfinite(config.random_factor) and config.random_factor >= 1.0):
        raise InvalidArgumentError(f"--random-factor must be >= 1, got {config.random_factor:g}")


def dataset_name(source: DataSource) -> str:
    """The configured name, else the train file's folder and stem ("clinc150/train")."""
    parent = source.train.resolve().parent.name
    return source.name or (f"{parent}/{source.train.stem}" if parent else source.train.stem)


def pool_name(config: SimulateConfig, splits: Splits) -> str:
    """The configured pool, or the train file's stem plus a hash of the rows to ingest."""
    if config.pool:
        return config.pool
    digest = hashlib.sha256()
    for rows in (splits.train, splits.test):
        digest.update(rows.to_jsonl())
        digest.update(b"\x00split\x00")
    stem = re.sub(r"[^a-z0-9_-]+", "-", dataset_name(config.data).lower()).strip("-_")[:40]
    return f"{stem or 'pool'}-{digest.hexdigest()[:8]}"


# ---------------------------------------------------------------------------------------
# the loop: strategies x seeds, random further


def random_rounds(config: SimulateConfig, train_rows: int) -> int:
    """Rounds random runs: to random_factor x the budget, within the training rows."""
    loop = config.loop
    target = min(math.ceil(config.random_factor * config.budget), train_rows)
    wanted = math.ceil((target - loop.initial_size) / loop.batch_size)
    within = (train_rows - loop.initial_size) // loop.batch_size
    return max(loop.rounds, min(wanted, within))


def loop_parts(config: SimulateConfig, train_rows: int) -> list[LoopConfig]:
    """The loops to run: the strategies at the budget, and random alone further."""
    loop = config.loop
    extra = random_rounds(config, train_rows)
    if "random" not in loop.strategies or extra == loop.rounds:
        return [loop]
    others = tuple(s for s in loop.strategies if s != "random")
    parts = [replace(loop, strategies=others)] if others else []
    return [*parts, replace(loop, strategies=("random",), rounds=extra)]


def merge_results(parts: Sequence[SimulationResult], loop: LoopConfig) -> SimulationResult:
    """One result from loops over disjoint strategies, in the order one loop over all of
    them would have produced (seed, then strategy, then round)."""
    order = {
        (strategy, seed): n
        for n, (seed, strategy) in enumerate((s, st) for s in loop.seeds for st in loop.strategies)
    }
    merged = SimulationResult(wall_s=sum(p.wall_s for p in parts))
    merged.points = sorted(
        (p for r in parts for p in r.points), key=lambda p: (order[p.strategy, p.seed], p.round)
    )
    merged.sessions = sorted(
        (s for r in parts for s in r.sessions), key=lambda s: order[s.strategy, s.seed]
    )
    for key in sorted((k for r in parts for k in r.final_labels), key=order.__getitem__):
        merged.final_labels[key] = next(r.final_labels[key] for r in parts if key in r.final_labels)
    for r in parts:
        merged.alignment.update(r.alignment)
    return merged


def run_loops(
    store: Store,
    proxy: ProxyClient,
    data: PoolData,
    config: SimulateConfig,
    run_name: str,
    asvp: Any = None,
) -> SimulationResult:
    """Every (strategy, seed) session, with a progress bar over all rounds."""
    from proxal.orchestrator_service.engine.simulation import run_simulation
    from tqdm import tqdm

    parts = loop_parts(config, len(data.train_ids))
    total = sum(len(p.seeds) * len(p.strategies) * (p.rounds + 1) for p in parts)
    with tqdm(total=total, desc="active learning (proxy rounds)", unit="round") as bar:
        results = [
            run_simulation(
                store, proxy, data, part, run_name, on_round=lambda _: bar.update(1), asvp=asvp
            )
            for part in parts
        ]
    return merge_results(results, config.loop)


# ---------------------------------------------------------------------------------------
# services, ingest and embed


def ensure_embeddings(
    store: Store, encoder: EncoderClient, pool: str, splits: Splits, backend: str
) -> str:
    """Ingest and embed the pool unless a previous run in this store already did → version."""
    from proxal.orchestrator_service.rpc.progress import describe, embed_with_progress

    if store.has_pool(pool) and store.list_versions(pool):
        version = store.latest_version(pool).version
        print(f"reusing pool {pool!r} and embedding version {version} from {store.uri}")
        return version
    if splits.note:
        print(splits.note)
    for split, rows in (("train", splits.train), ("test", splits.test)):
        response = encoder.ingest(pool, split, rows)
        print(f"ingested {response.rows_added} {split} rows ({len(response.classes)} classes)")
    embedded = embed_with_progress(encoder, pool, backend=backend)
    print(f"embedding version {describe(embedded)}")
    return embedded.version


def texts_by_id(store: Store, pool: str) -> dict[int, str]:
    rows = store.pool_rows(pool, columns=["id", "text"])
    return dict(zip(rows.column("id").to_pylist(), rows.column("text").to_pylist(), strict=True))


@dataclass
class LoopOutput:
    """What the services phase hands on: the pool's data, the loop's result, timings."""

    data: PoolData
    result: SimulationResult
    run_name: str
    timings: dict[str, float]


def run_with_services(
    config: SimulateConfig, splits: Splits, pool: str, store: Store
) -> LoopOutput:
    """Start the encoder and proxy, ingest + embed (or reuse), run the loops, stop them."""
    from proxal.orchestrator_service.engine.simulation import AsvpRuntime, PoolData
    from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient
    from proxal.orchestrator_service.rpc.processes import ServiceProcess

    out, t_start, timings = config.out_dir, time.perf_counter(), {}
    checkpoints = out / "checkpoints"  # ASVP writes here; the encoder reads from here
    checkpoints.mkdir(exist_ok=True)
    with (
        ServiceProcess(
            "encoder_service",
            store.uri,
            ["--backend", config.backend, "--checkpoint-root", str(checkpoints)],
            log_path=out / "logs" / "encoder.log",
        ) as enc_proc,
        ServiceProcess("proxy_service", store.uri, log_path=out / "logs" / "proxy.log") as prx_proc,
    ):
        print(
            f"encoder service on {enc_proc.address}, proxy service on {prx_proc.address}",
            flush=True,
        )
        timings["start_services_s"] = time.perf_counter() - t_start
        encoder, proxy = EncoderClient(enc_proc.address), ProxyClient(prx_proc.address)
        t0 = time.perf_counter()
        version = ensure_embeddings(store, encoder, pool, splits, config.backend)
        timings["ingest_embed_s"] = time.perf_counter() - t0
        data = PoolData.from_store(store, pool, version)
        check_budget(config, len(data.train_ids))  # a reused pool may differ from the files
        run_name = time.strftime(f"{config.run_prefix}-%Y%m%d-%H%M%S")
        runtime = None
        if config.loop.asvp is not None:
            runtime = AsvpRuntime(encoder, checkpoints, texts_by_id(store, pool))
        result = run_loops(store, proxy, data, config, run_name, runtime)
        timings["active_learning_s"] = result.wall_s
        encoder.close()
        proxy.close()
    return LoopOutput(data, result, run_name, timings)


# ---------------------------------------------------------------------------------------
# successors


def fine_tune_one(
    strategy: str,
    seed: int,
    labels_at_budget: tuple[Sequence[int], Sequence[str]],
    store: Store,
    output: LoopOutput,
    config: SimulateConfig,
) -> tuple[SuccessorRow, dict[str, Any]]:
    """Fine-tune a MiniLM-L6 successor on one session's labels at the budget and score it on
    the test split → (run directory row, report.json entry)."""
    from proxal.orchestrator_service.analysis.runs import SuccessorRow
    from proxal.orchestrator_service.successor.training import fine_tune_successor

    data, (ids, labels) = output.data, labels_at_budget
    texts_of = texts_by_id(store, data.pool)
    successor_config, why = config.successor, "as configured"
    if config.loop.asvp is not None:  # ASVP's rule picks LP-FT or FT
        method, why = output.result.successor_method(strategy, seed)
        successor_config = replace(config.successor, method=method)
    print(
        f"\nfine-tuning a MiniLM-L6 successor ({successor_config.method}: {why}) on the "
        f"{len(ids)} labels {strategy} acquired (seed {seed})"
    )
    index = {c: i for i, c in enumerate(data.classes)}
    successor = fine_tune_successor(
        [texts_of[i] for i in ids],
        [index[lab] for lab in labels],
        num_classes=len(data.classes),
        config=successor_config,
    )
    metrics = successor.evaluate(
        [texts_of[i] for i in data.test_ids.tolist()], data.test_gold.tolist()
    )
    print(
        f"successor ({strategy}): test accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f} ({successor.train_seconds:.0f} s)"
    )
    row = SuccessorRow(
        strategy,
        seed,
        len(ids),
        "minilm-l6",
        successor_config.method,
        metrics["accuracy"],
        metrics["macro_f1"],
        successor.train_seconds,
    )
    entry = {
        "strategy": strategy,
        "seed": seed,
        "labels": len(ids),
        "method": successor_config.method,
        "method_reason": why,
        "train_seconds": successor.train_seconds,
        **metrics,
    }
    return row, entry


def fine_tune_successors(
    store: Store, output: LoopOutput, config: SimulateConfig
) -> tuple[list[SuccessorRow], list[dict[str, Any]]]:
    """Successors on the labels each of `successor_strategies` acquired by the label budget
    (random's longer run is cut at the budget), for the first seed."""
    rows, entries = [], []
    seed = config.loop.seeds[0]
    for strategy in config.successor_strategies:
        if (strategy, seed) not in output.result.final_labels:
            continue
        ids, labels = output.result.final_labels[(strategy, seed)]
        at_budget = (ids[: config.budget].tolist(), labels[: config.budget])
        row, entry = fine_tune_one(strategy, seed, at_budget, store, output, config)
        rows.append(row)
        entries.append(entry)
    return rows, entries


# ---------------------------------------------------------------------------------------
# reports


def _jsonable_config(config: SimulateConfig) -> dict[str, Any]:
    return dict(json.loads(json.dumps(asdict(config), default=str)))


def budget_summary(
    summary: dict[str, list[dict[str, float]]], budget: int
) -> dict[str, list[dict[str, float]]]:
    """The learning curves up to the label budget (random runs further: cut for tables that
    compare strategies over the same labels)."""
    return {s: [r for r in rows if r["labels"] <= budget] for s, rows in summary.items()}


def saving_ratios_at_budget(
    summary: dict[str, list[dict[str, float]]], budget: int
) -> dict[str, SavingRatio]:
    """SSR of each strategy but random at its last label count within the budget."""
    from proxal.orchestrator_service.analysis.evaluation import sample_saving_ratio

    if "random" not in summary:
        return {}
    cut = budget_summary(summary, budget)
    return {
        s: sample_saving_ratio(rows, summary["random"])
        for s, rows in cut.items()
        if s != "random" and rows
    }


def closing_note(ssr: dict[str, SavingRatio], budget: int, random_labels: int) -> str:
    """One paragraph answering "would active learning help?" with the SSR per strategy."""
    if not ssr:
        return (
            "No sample saving ratio: random sampling was not among the strategies "
            "(add random to --strategies to measure what the others save)."
        )
    parts = [
        f"{s} {r.display()} (random needs {r.random_labels:,.0f} labels for its "
        f"{r.strategy_accuracy:.4f})"
        for s, r in ssr.items()
    ]
    best = max(ssr, key=lambda s: ssr[s].ratio if math.isfinite(ssr[s].ratio) else -1.0)
    verdict = (
        f"Most labels saved by {best}: active learning helps on this data"
        if ssr[best].ratio > 1.0
        else "No strategy beats random sampling here"
    )
    return (
        f"Sample saving ratio at {budget:,} labels (labels random sampling needs to reach the "
        f"strategy's mean test accuracy, divided by {budget:,}; random ran to "
        f"{random_labels:,} labels): " + "; ".join(parts) + f". {verdict}."
    )


def report_document(
    config: SimulateConfig, output: LoopOutput, successors: list[dict[str, Any]]
) -> dict[str, Any]:
    """report.json: the dataset, config, learning curves, AUC, final scores, every round."""
    from proxal.orchestrator_service.analysis import evaluation

    summary = evaluation.summarise(output.result.points)
    data = output.data
    return {
        "dataset": {
            "name": dataset_name(config.data),
            **({"licence": config.data.licence} if config.data.licence else {}),
            "pool": data.pool,
            "train_rows": len(data.train_ids),
            "test_rows": len(data.test_ids),
            "classes": len(data.classes),
        },
        "embedding_version": data.version,
        "config": _jsonable_config(config),
        "run": output.run_name,
        "learning_curves": summary,
        "auc": {s: evaluation.area_under_curve(rows) for s, rows in summary.items()},
        "final": {s: rows[-1] for s, rows in summary.items()},
        "points": output.result.as_rows(),
        "alignment": {
            f"{strategy}/s{seed}": [d.as_dict() for d in decisions]
            for (strategy, seed), decisions in output.result.alignment.items()
        },
        "successors": successors,
        "timings_s": output.timings,
    }


def write_outputs(
    store: Store,
    config: SimulateConfig,
    output: LoopOutput,
    successors: tuple[list[SuccessorRow], list[dict[str, Any]]],
) -> SimulateOutcome:
    """report.json, learning_curve.png, the run directory and its report → the outcome."""
    from proxal.orchestrator_service.analysis import evaluation, report
    from proxal.orchestrator_service.analysis.runs import write_run

    out, data = config.out_dir, output.data
    doc = report_document(config, output, successors[1])
    summary = doc["learning_curves"]
    ssr = saving_ratios_at_budget(summary, config.budget)
    random_labels = int(summary["random"][-1]["labels"]) if "random" in summary else 0
    note = closing_note(ssr, config.budget, random_labels)
    doc["ssr"] = {s: evaluation.jsonable(r) for s, r in ssr.items()}
    doc["closing_note"] = note
    report.write_json(doc, out / "report.json")
    name = doc["dataset"]["name"]
    title = f"{name}: proxy active learning, {len(config.loop.seeds)} seed(s)"
    report.plot_curves(summary, out / "learning_curve.png", title)
    run: Run = output.result.to_run(
        store,
        data,
        output.run_name,
        dataset=name,
        encoder={"model": "minilm-l6", "backend": config.backend},
        embed_s=output.timings["ingest_embed_s"],
        config={**asdict(config.loop), "random_rounds": random_rounds(config, len(data.train_ids))},
    )
    run.successors = successors[0]
    run_dir = write_run(run, out / "run")
    written = report.write_report(
        run, out / "report", extra_sections=[("Would active learning help?", note)]
    )
    return SimulateOutcome(doc, ssr, out / "report", written[0], run_dir, note)


def print_curves(result: SimulationResult, budget: int) -> None:
    """The learning curves up to the budget (and the ASVP checks, if any ran), and where
    each stopping rule would have stopped."""
    from proxal.orchestrator_service.analysis import evaluation, report, stopping

    print()
    print(report.curve_table(budget_summary(evaluation.summarise(result.points), budget)))
    if result.alignment:
        print()
        print(report.alignment_table(result.alignment))
    stops = stopping.stop_points(result.points)
    if stops:
        print("\nwhere each stopping rule would have stopped (mean over the seeds that stopped):")
        print("\n".join(stopping.stopping_summary(stops)))


def print_summary(outcome: SimulateOutcome, config: SimulateConfig) -> None:
    """The SSR per strategy and where the files are."""
    print()
    print(outcome.closing_note)
    out = config.out_dir
    print(
        f"\nreport: {outcome.report}\nplot:   {out / 'learning_curve.png'}\n"
        f"json:   {out / 'report.json'}\n"
        f"run:    {outcome.run_dir} (`proxal report {outcome.run_dir}` rebuilds the report)\n"
        f"stop:   {outcome.report_dir / 'stopping.png'} (where each stopping rule stops)\n"
        f"total time {outcome.doc['timings_s']['total_s']:.0f} s"
    )


def run_simulate(config: SimulateConfig) -> SimulateOutcome:
    """Run the whole simulation (see the module docstring) → what it wrote; bad inputs
    raise InvalidArgumentError before any service starts."""
    from proxal.store import Store

    t_start = time.perf_counter()
    splits = read_splits(config.data)
    check_budget(config, len(splits.train.texts))
    out = config.out_dir
    (out / "logs").mkdir(parents=True, exist_ok=True)
    store = Store(str(out / "store"))
    output = run_with_services(config, splits, pool_name(config, splits), store)
    print_curves(output.result, config.budget)
    t0 = time.perf_counter()
    successors = fine_tune_successors(store, output, config)
    output.timings["successors_s"] = time.perf_counter() - t0
    output.timings["total_s"] = time.perf_counter() - t_start
    outcome = write_outputs(store, config, output, successors)
    print_summary(outcome, config)
    return outcome
