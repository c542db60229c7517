"""`proxal demo`: the whole path on real data (Banking77), end to end.

Starts the encoder and proxy services as subprocesses on loopback, ingests Banking77
into a local store, embeds it with MiniLM-L6, runs simulated active learning for several
strategies and seeds, fine-tunes MiniLM-L6 successors on the acquired labels, and writes
a JSON report, a PNG learning curve, the run directory (`out/run`) and its `proxal report`
(`out/report/report.md`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from orchestrator import evaluation, report
from orchestrator.clients import EncoderClient, ProxyClient
from orchestrator.processes import ServiceProcess
from orchestrator.progress import describe, embed_with_progress
from orchestrator.runs import SuccessorRow, write_run
from orchestrator.simulation import AsvpRuntime, LoopConfig, PoolData, run_simulation
from orchestrator.successor import SuccessorConfig, fine_tune_successor
from proxal_store import Store

DATA_DIR = Path(__file__).resolve().parent / "data" / "banking77"
POOL = "banking77"


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path = Path("proxal-demo")
    backend: str = "torch"
    train_limit: int | None = None  # use N evenly spaced training rows (quick runs)
    test_limit: int | None = None
    loop: LoopConfig = field(default_factory=LoopConfig)
    successor_strategies: tuple[str, ...] = ("margin", "random")
    successor: SuccessorConfig = field(default_factory=SuccessorConfig)


def _subset(path: Path, limit: int | None, tmp: Path) -> Path:
    """`path` itself, or a copy with `limit` evenly spaced lines (the files are sorted by
    label, so a prefix would hold only a few classes)."""
    if limit is None:
        return path
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    step = max(1, len(lines) // limit)
    out = tmp / path.name
    out.write_text("".join(lines[::step][:limit]), encoding="utf-8")
    return out


def _ensure_embeddings(store: Store, encoder: EncoderClient, config: DemoConfig) -> str:
    """Ingest and embed the pool unless a previous run in this store already did."""
    if store.has_pool(POOL) and store.list_versions(POOL):
        version = store.latest_version(POOL).version
        print(f"reusing pool {POOL!r} and embedding version {version} from {store.uri}")
        return version
    with tempfile.TemporaryDirectory() as tmp:
        for split, limit in (("train", config.train_limit), ("test", config.test_limit)):
            response = encoder.ingest_file(
                POOL, split, _subset(DATA_DIR / f"{split}.jsonl", limit, Path(tmp))
            )
            print(f"ingested {response.rows_added} {split} rows ({len(response.classes)} classes)")
    version = embed_with_progress(encoder, POOL, backend=config.backend)
    print(f"embedding version {describe(version)}")
    return version.version


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the demo; returns the report that is also written to out_dir/report.json."""
    with (DATA_DIR / "train.jsonl").open("rb") as fh:
        train_rows = sum(1 for _ in fh)
    config.loop.validate(min(train_rows, config.train_limit or train_rows))  # fail before work
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    checkpoints = out / "checkpoints"  # ASVP writes here; the encoder reads from here
    checkpoints.mkdir(exist_ok=True)
    store_uri = str(out / "store")
    store = Store(store_uri)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    with (
        ServiceProcess(
            "encoder_service",
            store_uri,
            ["--backend", config.backend, "--checkpoint-root", str(checkpoints)],
            log_path=out / "logs" / "encoder.log",
        ) as enc_proc,
        ServiceProcess("proxy_service", store_uri, log_path=out / "logs" / "proxy.log") as prx_proc,
    ):
        print(
            f"encoder service on {enc_proc.address}, proxy service on {prx_proc.address}",
            flush=True,
        )
        timings["start_services_s"] = time.perf_counter() - t_start
        encoder, proxy = EncoderClient(enc_proc.address), ProxyClient(prx_proc.address)
        t0 = time.perf_counter()
        version = _ensure_embeddings(store, encoder, config)
        timings["ingest_embed_s"] = time.perf_counter() - t0

        data = PoolData.from_store(store, POOL, version)
        run_name = time.strftime("demo-%Y%m%d-%H%M%S")
        total = len(config.loop.seeds) * len(config.loop.strategies) * (config.loop.rounds + 1)
        runtime = (
            AsvpRuntime(encoder, checkpoints, _texts_by_id(store))
            if config.loop.asvp is not None
            else None
        )
        with tqdm(total=total, desc="active learning (proxy rounds)", unit="round") as bar:
            result = run_simulation(
                store,
                proxy,
                data,
                config.loop,
                run_name,
                on_round=lambda p: bar.update(1),
                asvp=runtime,
            )
        timings["active_learning_s"] = result.wall_s
        encoder.close()
        proxy.close()

    summary = evaluation.summarise(result.points)
    print()
    print(report.curve_table(summary))
    if result.alignment:
        print()
        print(report.alignment_table(result.alignment))

    successors = []
    successor_rows: list[SuccessorRow] = []
    texts_of = _texts_by_id(store)
    test_texts = [texts_of[i] for i in data.test_ids.tolist()]
    test_labels = data.test_gold.tolist()
    index = {c: i for i, c in enumerate(data.classes)}
    t0 = time.perf_counter()
    for strategy in config.successor_strategies:
        seed = config.loop.seeds[0]
        if (strategy, seed) not in result.final_labels:
            continue
        ids, labels = result.final_labels[(strategy, seed)]
        successor_config, why = config.successor, "as configured"
        if config.loop.asvp is not None:  # ASVP's rule picks LP-FT or FT
            method, why = result.successor_method(strategy, seed)
            successor_config = replace(config.successor, method=method)
        print(
            f"\nfine-tuning a MiniLM-L6 successor ({successor_config.method}: {why}) on the "
            f"{len(ids)} labels {strategy} acquired (seed {seed})"
        )
        successor = fine_tune_successor(
            [texts_of[i] for i in ids.tolist()],
            [index[lab] for lab in labels],
            num_classes=len(data.classes),
            config=successor_config,
        )
        metrics = successor.evaluate(test_texts, test_labels)
        successor_rows.append(
            SuccessorRow(
                strategy,
                seed,
                len(ids),
                "minilm-l6",
                successor_config.method,
                metrics["accuracy"],
                metrics["macro_f1"],
                successor.train_seconds,
            )
        )
        successors.append(
            {
                "strategy": strategy,
                "seed": seed,
                "labels": len(ids),
                "method": successor_config.method,
                "method_reason": why,
                "train_seconds": successor.train_seconds,
                **metrics,
            }
        )
        print(
            f"successor ({strategy}): test accuracy {metrics['accuracy']:.4f}, "
            f"macro-F1 {metrics['macro_f1']:.4f} ({successor.train_seconds:.0f} s)"
        )
    timings["successors_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    final = {s: rows[-1] for s, rows in summary.items()}
    doc = {
        "dataset": {
            "name": "banking77",
            "licence": "CC BY 4.0",
            "pool": POOL,
            "train_rows": len(data.train_ids),
            "test_rows": len(data.test_ids),
            "classes": len(data.classes),
        },
        "embedding_version": version,
        "config": {**asdict(config), "out_dir": str(config.out_dir)},
        "run": run_name,
        "learning_curves": summary,
        "auc": {s: evaluation.area_under_curve(rows) for s, rows in summary.items()},
        "final": final,
        "points": result.as_rows(),
        "alignment": {
            f"{strategy}/s{seed}": [d.as_dict() for d in decisions]
            for (strategy, seed), decisions in result.alignment.items()
        },
        "successors": successors,
        "timings_s": timings,
    }
    report.write_json(doc, out / "report.json")
    report.plot_curves(
        summary,
        out / "learning_curve.png",
        f"Banking77: proxy active learning, {len(config.loop.seeds)} seed(s)",
    )
    run = result.to_run(
        store,
        data,
        run_name,
        dataset="banking77",
        encoder={"model": "minilm-l6", "backend": config.backend},
        embed_s=timings["ingest_embed_s"],
        config=asdict(config.loop),
    )
    run.successors = successor_rows
    run_dir = write_run(run, out / "run")
    written = report.write_report(run, out / "report")
    print(
        f"\nreport: {out / 'report.json'}\nplot:   {out / 'learning_curve.png'}\n"
        f"run:    {run_dir} (`proxal report {run_dir}` rebuilds {written[0]})\n"
        f"total time {timings['total_s']:.0f} s"
    )
    return doc


def _texts_by_id(store: Store) -> dict[int, str]:
    rows = store.pool_rows(POOL, columns=["id", "text"])
    return dict(zip(rows.column("id").to_pylist(), rows.column("text").to_pylist(), strict=True))
