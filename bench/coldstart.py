"""Cold start (issue 18): k-means initial batch and class-balanced selection vs random init.

Every arm is the simulator (`engine.simulation.run_simulation`, the engine a live session
runs on) from no labels at all, margin sampling once two classes are labelled, batch 20:

- ``random``            random first batch(es), then margin (proxal's default);
- ``kmeans``            k-means first batch (SelectRequest.initial = "kmeans"), then margin;
- ``kmeans+balanced``   k-means first batch, then margin spread over the predicted classes;
- ``random+balanced``   random first batch, then class-balanced margin.

Measured per round: the classes the labels cover so far (gold labels of every pick), the
largest share of one gold class in a batch after the first ("top1": the issue's "14 of
16 items about one topic"; mean over batches 2..N) and the proxy's test accuracy /
macro-F1 (logistic regression on MiniLM-L6 embeddings; 0 before any label, the constant
guess of the one class seen before two). The pool is a seeded
sample of the train split (``--pool-limit``) and the test split is sampled too
(``--test-limit``); both are embedded once and cached in ``--cache`` (a proxal store).

    PROXAL_DATASETS=/work/shared/datasets python bench/coldstart.py      # docs' numbers
    python bench/coldstart.py --datasets banking77 --seeds 0 --rounds 3  # quick

Writes bench/results/coldstart.json, docs/coldstart.png and prints a table per dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "protos")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from proxal.orchestrator_service.analysis.runs import RoundRow  # noqa: E402
from proxal.orchestrator_service.engine.simulation import (  # noqa: E402
    LoopConfig,
    PoolData,
    SimulationResult,
    run_simulation,
)
from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient  # noqa: E402
from proxal.orchestrator_service.rpc.processes import ServiceProcess  # noqa: E402
from proxal.store import Store  # noqa: E402

DATASETS_DIR = Path(os.environ.get("PROXAL_DATASETS", REPO.parent / "shared" / "datasets"))
# name -> (folder under DATASETS_DIR, classes kept: 0 = all). banking77-11 is 11 seeded
# intents of Banking77: the 11-class cold start.
DATASETS = {
    "banking77": ("banking77", 0),
    "clinc150": ("clinc150", 0),
    "banking77-11": ("banking77", 11),
}
ARMS: dict[str, dict[str, Any]] = {
    "random": {"initial_batch": "random", "class_balanced": False},
    "kmeans": {"initial_batch": "kmeans", "class_balanced": False},
    "kmeans+balanced": {"initial_batch": "kmeans", "class_balanced": True},
    "random+balanced": {"initial_batch": "random", "class_balanced": True},
}
RESULTS = REPO / "bench" / "results" / "coldstart.json"
PLOT = REPO / "docs" / "coldstart.png"


def _sample(src: Path, dst: Path, limit: int, classes: int = 0, seed: int = 0) -> int:
    """Copy a seeded sample of `limit` rows of `src` ({"text","label"} lines) to `dst`;
    with `classes`, only rows of that many seeded classes."""
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line]
    rng = np.random.default_rng(seed)
    if classes:
        names = sorted({str(r["label"]) for r in rows})
        kept = set(np.random.default_rng(seed).choice(names, classes, replace=False).tolist())
        rows = [r for r in rows if str(r["label"]) in kept]
    keep = np.sort(rng.choice(len(rows), min(limit, len(rows)), replace=False))
    lines = [json.dumps({"text": rows[i]["text"], "label": str(rows[i]["label"])}) for i in keep]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(keep)


def embedded_pool(store_uri: str, dataset: str, args: argparse.Namespace) -> tuple[str, float]:
    """(pool, embed seconds): the sampled pool in the cache store, embedded once (0 s cached)."""
    pool = f"{dataset}-p{args.pool_limit}-t{args.test_limit}"
    store = Store(store_uri)
    ingested = store.has_pool(pool)
    if ingested and store.list_versions(pool):
        return pool, 0.0
    work = Path(args.cache) / pool
    work.mkdir(parents=True, exist_ok=True)
    folder, classes = DATASETS[dataset]
    for split, limit in (("train", args.pool_limit), ("test", args.test_limit)):
        _sample(DATASETS_DIR / folder / f"{split}.jsonl", work / f"{split}.jsonl", limit, classes)
    t0 = time.perf_counter()
    with (
        ServiceProcess("encoder_service", store_uri, log_path=work / "encoder.log") as enc,
        closing(EncoderClient(enc.address)) as encoder,
    ):
        for split in () if ingested else ("train", "test"):
            encoder.ingest_file(pool, split, work / f"{split}.jsonl")
        encoder.embed(pool, max_length=64)
    return pool, time.perf_counter() - t0


def coverage(result: SimulationResult, gold: dict[int, int], rounds: int) -> list[int]:
    """Classes covered by the labels after rounds 1..rounds (the picks of rounds < r)."""
    seen: set[int] = set()
    out = []
    for point in sorted(result.points, key=lambda p: p.round)[:rounds]:
        seen.update(gold[i] for i in point.selected_ids)
        out.append(len(seen))
    return out


def top_class_share(points: list[RoundRow], gold: dict[int, int]) -> float:
    """Mean over the batches of `points` of the largest share of one gold class in it."""
    shares = [
        np.bincount([gold[i] for i in p.selected_ids]).max() / len(p.selected_ids)
        for p in points
        if p.selected_ids
    ]
    return float(np.mean(shares)) if shares else 0.0


def run_arms(store: Store, proxy: ProxyClient, data: PoolData, args: argparse.Namespace) -> list:
    """Every arm x seed on one pool → one row each: coverage and learning curve."""
    gold = dict(zip(data.train_ids.tolist(), data.train_gold.tolist(), strict=True))
    rows = []
    for seed in args.seeds:
        for arm, options in ARMS.items():
            loop = LoopConfig(
                strategies=("margin",),
                seeds=(seed,),
                initial_size=0,
                batch_size=args.batch,
                rounds=args.rounds,
                **options,
            )
            name = f"cold-{arm.replace('+', '-')}-{seed}-{time.strftime('%H%M%S')}"
            result = run_simulation(store, proxy, data, loop, name)
            points = sorted(result.points, key=lambda p: p.round)
            first = [gold[i] for i in points[0].selected_ids]
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "coverage": coverage(result, gold, args.rounds),
                    "labels": [p.labels for p in points],
                    "accuracy": [p.accuracy for p in points],
                    "macro_f1": [p.macro_f1 for p in points],
                    "first_batch_top_class": int(np.bincount(first).max()),
                    "top_class_share": top_class_share(points[1:-1], gold),
                    "loop_s": result.wall_s,
                }
            )
            for info in result.sessions:
                store.delete_session(info.session)
            cov = rows[-1]["coverage"]
            print(
                f"  {arm:<16} s{seed}: classes after round 1 {cov[0]}, after {args.rounds} "
                f"{cov[-1]}; accuracy at {points[-1].labels} labels {points[-1].accuracy:.3f} "
                f"({result.wall_s:.1f} s)",
                flush=True,
            )
    return rows


def summary(rows: list[dict[str, Any]], marks: list[int]) -> dict[str, dict[str, Any]]:
    """Per arm: mean (std) over seeds of coverage after rounds `marks` and the curves."""
    out = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        cov = np.array([r["coverage"] for r in mine], dtype=float)
        acc = np.array([r["accuracy"] for r in mine], dtype=float)
        f1 = np.array([r["macro_f1"] for r in mine], dtype=float)
        out[arm] = {
            "seeds": len(mine),
            "coverage_mean": cov.mean(axis=0).tolist(),
            "coverage_std": cov.std(axis=0).tolist(),
            "accuracy_mean": acc.mean(axis=0).tolist(),
            "accuracy_std": acc.std(axis=0).tolist(),
            "macro_f1_mean": f1.mean(axis=0).tolist(),
            "labels": mine[0]["labels"],
            "marks": marks,
            "top_class_share_mean": float(np.mean([r["top_class_share"] for r in mine])),
            "first_batch_top_class_mean": float(
                np.mean([r["first_batch_top_class"] for r in mine])
            ),
            "loop_s_mean": float(np.mean([r["loop_s"] for r in mine])),
        }
    return out


def print_table(dataset: str, classes: int, summ: dict[str, dict[str, Any]]) -> None:
    marks = next(iter(summ.values()))["marks"]
    labels = next(iter(summ.values()))["labels"]
    head = " ".join(f"cov@r{m:<3}" for m in marks)
    acc_cols = " ".join(f"acc@{labels[m]:<4}" for m in marks)
    print(f"\n{dataset} ({classes} classes)\n{'arm':<16} {head}  {acc_cols}  top1  loop s")
    for arm, s in summ.items():
        cov = " ".join(
            f"{s['coverage_mean'][m - 1]:5.1f}±{s['coverage_std'][m - 1]:<3.1f}" for m in marks
        )
        acc = " ".join(f"{s['accuracy_mean'][m]:8.3f}" for m in marks)
        top = s["top_class_share_mean"]
        print(f"{arm:<16} {cov}  {acc}  {top:.2f} {s['loop_s_mean']:6.1f}")


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = doc["datasets"]
    fig, axes = plt.subplots(2, len(datasets), figsize=(6 * len(datasets), 8), squeeze=False)
    for col, (name, ds) in enumerate(datasets.items()):
        for arm, s in ds["summary"].items():
            rounds = np.arange(1, len(s["coverage_mean"]) + 1)
            axes[0][col].plot(rounds * doc["batch"], s["coverage_mean"], marker="o", label=arm)
            axes[1][col].plot(s["labels"], s["accuracy_mean"], marker="o", label=arm)
        axes[0][col].set(
            title=f"{name}: classes covered ({ds['classes']})", xlabel="labels", ylabel="classes"
        )
        axes[1][col].set(title=f"{name}: proxy test accuracy", xlabel="labels", ylabel="accuracy")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--pool-limit", type=int, default=5000)
    p.add_argument("--test-limit", type=int, default=1500)
    p.add_argument("--cache", default=str(REPO / "bench" / ".cache" / "coldstart"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--plot", type=Path, default=PLOT)
    args = p.parse_args()
    store_uri = str(Path(args.cache) / "store")
    marks = sorted({1, 2, min(5, args.rounds), args.rounds})
    doc: dict[str, Any] = {
        "batch": args.batch,
        "rounds": args.rounds,
        "seeds": args.seeds,
        "pool_limit": args.pool_limit,
        "test_limit": args.test_limit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "datasets": {},
    }
    t0 = time.perf_counter()
    for dataset in args.datasets:
        pool, embed_s = embedded_pool(store_uri, dataset, args)
        store = Store(store_uri)
        data = PoolData.from_store(store, pool, store.latest_version(pool).version)
        print(
            f"== {dataset}: pool {len(data.train_ids)}, test {len(data.test_ids)}, "
            f"{len(data.classes)} classes (embed {embed_s:.0f} s)",
            flush=True,
        )
        with (
            ServiceProcess("proxy_service", store_uri, ["--score-threads", "1"]) as prx,
            closing(ProxyClient(prx.address)) as proxy,
        ):
            rows = run_arms(store, proxy, data, args)
        summ = summary(rows, marks)
        doc["datasets"][dataset] = {
            "classes": len(data.classes),
            "pool_rows": len(data.train_ids),
            "test_rows": len(data.test_ids),
            "embed_s": embed_s,
            "rows": rows,
            "summary": summ,
        }
        print_table(dataset, len(data.classes), summ)
    doc["wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    plot(doc, args.plot)
    print(f"\nwrote {args.out} and {args.plot} ({doc['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
