"""Evidence for issue 5: proxy AL vs proxy AL + ASVP refresh vs fine-tuned-acquisition AL vs
random, on real data, with the successor's test accuracy at every label budget and the wall
time of each AL loop.

Arms (all start from the same seeded initial set; every successor uses the same recipe):

- ``random``         proxy loop with random selection;
- ``proxy-margin``   proxy loop (logistic regression on pre-computed MiniLM-L6 embeddings);
- ``asvp-margin``    the same with ASVP feature refresh (LoRA fine-tune + LogME-PED gap);
                     its successors use the method ASVP's LP-FT/FT rule chose;
- ``ft-margin``      "standard" AL: MiniLM-L6 fine-tuned on the labels every round and run
                     over the whole pool; each round's model is that budget's successor.

For the proxy arms, a successor is fine-tuned on the first b acquired labels for each budget
b. Loop wall time: the proxy loops' `run_simulation` time (ASVP's fine-tunes and refreshes
included), the fine-tuned loop's train + score + select time up to its last selection (test
evaluation excluded in both; the final-budget model is the successor, as for the others).
The one-off pool embedding is reported separately and added in the "incl. embed" ratio.

    python bench/evidence.py --datasets banking77 --rounds 2 --epochs 4 --threads 1
    python bench/evidence.py --datasets ag_news --rounds 2 --epochs 4 --threads 1 \
        --test-limit 1000                          # the CPU runs whose results are in docs/
    python bench/evidence.py --datasets banking77 --seeds 0 --rounds 1 --test-limit 300  # quick

Each dataset's run writes bench/results/evidence_<dataset>.json; docs/evidence.md and
docs/evidence_<dataset>.png are then rebuilt from every such file, so datasets can run as
separate processes (`--threads 1` each on a 2-core machine) and still share one report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "protos"), str(REPO / "bench")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from finetuned_al import FinetunedLoopConfig, run_finetuned_al  # noqa: E402
from proxal.orchestrator_service.engine.asvp import AsvpConfig  # noqa: E402
from proxal.orchestrator_service.engine.simulation import (  # noqa: E402
    AsvpRuntime,
    LoopConfig,
    PoolData,
    SimulationResult,
    run_simulation,
)
from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient  # noqa: E402
from proxal.orchestrator_service.rpc.processes import ServiceProcess  # noqa: E402
from proxal.orchestrator_service.successor.training import SuccessorConfig, fine_tune_successor  # noqa: E402
from proxal.store import Store  # noqa: E402

DATASETS_DIR = Path(os.environ.get("PROXAL_DATASETS", REPO.parent / "shared" / "datasets"))
ARMS = ("random", "proxy-margin", "asvp-margin", "ft-margin")


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Path
    test: Path
    initial: int
    batch: int


DATASETS = {
    "ag_news": Dataset(
        "ag_news",
        DATASETS_DIR / "ag_news" / "train_subset_alps10k.jsonl",
        DATASETS_DIR / "ag_news" / "test.jsonl",
        initial=50,
        batch=50,
    ),
    "banking77": Dataset(
        "banking77",
        REPO / "orchestrator" / "demo" / "data" / "banking77" / "train.jsonl",
        REPO / "orchestrator" / "demo" / "data" / "banking77" / "test.jsonl",
        initial=200,
        batch=100,
    ),
}


def _write_split(src: Path, dst: Path, limit: int | None, seed: int = 0) -> int:
    """Copy `src` ({"text","label"} per line) to `dst`, optionally a stratified sample."""
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line]
    rows = [{"text": r["text"], "label": str(r["label"])} for r in rows]
    if limit is not None and limit < len(rows):
        from sklearn.model_selection import train_test_split

        labels = [r["label"] for r in rows]
        rows, _ = train_test_split(
            rows, train_size=limit, stratify=labels, random_state=seed, shuffle=True
        )
    dst.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def run_dataset(ds: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    """Every arm and seed on one dataset → its raw rows and timings."""
    tmp = Path(tempfile.mkdtemp(prefix=f"proxal-evidence-{ds.name}-"))
    n_train = _write_split(ds.train, tmp / "train.jsonl", args.pool_limit)
    n_test = _write_split(ds.test, tmp / "test.jsonl", args.test_limit)
    checkpoints = tmp / "checkpoints"
    checkpoints.mkdir()
    store_uri = str(tmp / "store")
    run = DatasetRun(ds, args)
    print(f"\n== {ds.name}: pool {n_train}, test {n_test}, budgets {run.budgets}", flush=True)
    with (
        ServiceProcess(
            "encoder_service",
            store_uri,
            ["--checkpoint-root", str(checkpoints)],
            log_path=tmp / "encoder.log",
        ) as enc,
        ServiceProcess("proxy_service", store_uri, log_path=tmp / "proxy.log") as prx,
        closing(EncoderClient(enc.address)) as encoder,
        closing(ProxyClient(prx.address)) as proxy,
    ):
        t0 = time.perf_counter()
        for split in ("train", "test"):
            encoder.ingest_file(ds.name, split, tmp / f"{split}.jsonl")
        version = encoder.embed(ds.name, max_length=args.max_length).version
        embed_s = time.perf_counter() - t0
        print(f"ingest + embed {embed_s:.1f} s", flush=True)
        run.load(Store(store_uri), version, AsvpRuntime(encoder, checkpoints))
        for seed in args.seeds:
            proxy_runs = run.proxy_arms(proxy, seed)
            run.successor_rows(proxy_runs, seed)
            run.finetuned_arm(seed)
    return {
        "dataset": ds.name,
        "pool_rows": n_train,
        "test_rows": n_test,
        "classes": len(run.data.classes),
        "budgets": run.budgets,
        "embed_s": embed_s,
        "rows": run.rows,
        "walls": run.walls,
        "alignment": run.alignment,
        "successor": asdict(run.successor_cfg),
        "asvp": asdict(run.asvp_cfg),
    }


class DatasetRun:
    """One dataset's arms: the shared settings and data, and the rows they produce."""

    def __init__(self, ds: Dataset, args: argparse.Namespace) -> None:
        self.ds, self.args = ds, args
        self.budgets = [ds.initial + r * ds.batch for r in range(args.rounds + 1)]
        self.successor_cfg = SuccessorConfig(
            epochs=args.epochs, batch_size=16, max_length=args.max_length
        )
        self.asvp_cfg = AsvpConfig(
            every_rounds=args.asvp_every,
            threshold=args.asvp_threshold,
            finetune=replace(self.successor_cfg, method="lora", validation_fraction=0.2),
        )
        self.rows: list[dict[str, Any]] = []
        self.walls: list[dict[str, Any]] = []
        self.alignment: list[dict[str, Any]] = []

    def load(self, store: Store, version: str, runtime: AsvpRuntime) -> None:
        """The pool's embeddings and texts from `store`; `runtime` for the ASVP arm."""
        self.store = store
        self.data = PoolData.from_store(store, self.ds.name, version)
        table = store.pool_rows(self.ds.name, columns=["id", "text"])
        ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
        self.texts_of = dict(zip(ids, texts, strict=True))
        self.runtime = replace(runtime, texts_of=self.texts_of)
        self.test_texts = [self.texts_of[i] for i in self.data.test_ids.tolist()]
        self.train_texts = [self.texts_of[i] for i in self.data.train_ids.tolist()]
        self.index = {c: i for i, c in enumerate(self.data.classes)}

    def proxy_arms(self, proxy: ProxyClient, seed: int) -> dict[str, SimulationResult]:
        """The random, proxy and ASVP loops of `seed` → their results, by arm."""
        ds = self.ds
        loop = LoopConfig(
            strategies=("margin",),
            seeds=(seed,),
            initial_size=ds.initial,
            batch_size=ds.batch,
            rounds=self.args.rounds,
        )
        runs: dict[str, SimulationResult] = {}
        for arm, cfg in (
            ("random", replace(loop, strategies=("random",))),
            ("proxy-margin", loop),
            ("asvp-margin", replace(loop, asvp=self.asvp_cfg)),
        ):
            name = f"{arm}-{seed}-{time.strftime('%H%M%S')}"
            asvp = self.runtime if cfg.asvp is not None else None
            res = run_simulation(self.store, proxy, self.data, cfg, name, asvp=asvp)
            runs[arm] = res
            self.walls.append({"arm": arm, "seed": seed, "loop_s": res.wall_s})
            print(f"[{ds.name} s{seed}] {arm}: loop {res.wall_s:.1f} s", flush=True)
            for decisions in res.alignment.values():
                self.alignment.extend({"seed": seed, **d.as_dict()} for d in decisions)
        return runs

    def successor_rows(self, runs: dict[str, SimulationResult], seed: int) -> None:
        """A successor per proxy arm and budget, fine-tuned on the labels acquired so far."""
        for arm, res in runs.items():
            strategy = "random" if arm == "random" else "margin"
            ids, names = res.final_labels[(strategy, seed)]
            decisions = res.alignment.get((strategy, seed), [])
            proxy_acc = {p.labels: p.accuracy for p in res.points}
            for b in self.budgets:
                cfg = replace(self.successor_cfg, seed=seed)
                earlier = [d for d in decisions if d.labels <= b and d.action != "skip"]
                if arm == "asvp-margin" and earlier:
                    cfg = replace(cfg, method=earlier[-1].successor_method)
                out = self._successor(ids[:b].tolist(), [self.index[n] for n in names[:b]], cfg)
                row = {"arm": arm, "seed": seed, "labels": b, "method": cfg.method}
                self.rows.append({**row, "proxy_accuracy": proxy_acc.get(b), **out})
                print(
                    f"[{self.ds.name} s{seed}] {arm} @ {b}: successor acc "
                    f"{out['accuracy']:.4f} ({cfg.method}, {out['train_s']:.0f} s)",
                    flush=True,
                )

    def _successor(self, ids: list[int], labels: list[int], cfg: SuccessorConfig) -> dict:
        texts = [self.texts_of[i] for i in ids]
        model = fine_tune_successor(texts, labels, len(self.data.classes), cfg, progress=False)
        t = time.perf_counter()
        metrics = model.evaluate(self.test_texts, self.data.test_gold.tolist())
        return {**metrics, "train_s": model.train_seconds, "eval_s": time.perf_counter() - t}

    def finetuned_arm(self, seed: int) -> None:
        """Standard AL: the encoder fine-tuned every round; each round's model is a row."""
        ds, data = self.ds, self.data
        config = FinetunedLoopConfig(
            strategy="margin",
            seed=seed,
            initial_size=ds.initial,
            batch_size=ds.batch,
            rounds=self.args.rounds,
            successor=replace(self.successor_cfg, seed=seed),
        )
        ft = run_finetuned_al(
            data.train_ids,
            self.train_texts,
            data.train_gold,
            self.test_texts,
            data.test_gold,
            len(data.classes),
            config,
        )
        loop_s = sum(r.train_s + r.score_s + r.select_s for r in ft.rounds[:-1])
        self.walls.append({"arm": "ft-margin", "seed": seed, "loop_s": loop_s})
        print(f"[{ds.name} s{seed}] ft-margin: loop {loop_s:.1f} s", flush=True)
        for r in ft.rounds:
            self.rows.append(
                {
                    "arm": "ft-margin",
                    "seed": seed,
                    "labels": r.labels,
                    "method": self.successor_cfg.method,
                    "proxy_accuracy": None,
                    "accuracy": r.accuracy,
                    "macro_f1": r.macro_f1,
                    "train_s": r.train_s,
                    "eval_s": r.eval_s,
                    "score_s": r.score_s,
                }
            )


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std over seeds per (arm, budget), loop wall times and the issue's targets."""
    curves: dict[str, list[dict[str, float]]] = {}
    for arm in ARMS:
        rows = []
        for b in result["budgets"]:
            acc = [r["accuracy"] for r in result["rows"] if r["arm"] == arm and r["labels"] == b]
            f1 = [r["macro_f1"] for r in result["rows"] if r["arm"] == arm and r["labels"] == b]
            if acc:
                rows.append(
                    {
                        "labels": b,
                        "accuracy_mean": float(np.mean(acc)),
                        "accuracy_std": float(np.std(acc)),
                        "macro_f1_mean": float(np.mean(f1)),
                        "macro_f1_std": float(np.std(f1)),
                        "seeds": len(acc),
                    }
                )
        curves[arm] = rows
    final = result["budgets"][-1]
    walls = {arm: [w["loop_s"] for w in result["walls"] if w["arm"] == arm] for arm in ARMS}
    # The fine-tuned loop's model at the final budget is the successor, not acquisition: its
    # training counts as successor time, as it does for the proxy arms.
    walls["ft-margin"] = [
        sum(
            r["train_s"] + r["score_s"]
            for r in result["rows"]
            if r["arm"] == "ft-margin" and r["seed"] == seed and r["labels"] < final
        )
        for seed in sorted({r["seed"] for r in result["rows"]})
    ]
    wall = {arm: {"mean": float(np.mean(v)), "std": float(np.std(v))} for arm, v in walls.items()}

    def at(arm: str, b: int) -> float:
        return next(r["accuracy_mean"] for r in curves[arm] if r["labels"] == b)

    ratio = wall["ft-margin"]["mean"] / wall["proxy-margin"]["mean"]
    ratio_embed = wall["ft-margin"]["mean"] / (wall["proxy-margin"]["mean"] + result["embed_s"])
    gap = at("proxy-margin", final) - at("ft-margin", final)
    asvp_diffs = {b: at("asvp-margin", b) - at("proxy-margin", b) for b in result["budgets"]}
    return {
        "curves": curves,
        "wall_s": wall,
        "targets": {
            "time_ratio_ft_over_proxy": ratio,
            "time_ratio_ft_over_proxy_incl_embed": ratio_embed,
            "time_ratio_target_10x_met": ratio >= 10,
            "final_accuracy_proxy_minus_ft_points": 100 * gap,
            "final_accuracy_within_1pt_met": gap >= -0.01,
            "asvp_minus_static_points": {str(b): 100 * d for b, d in asvp_diffs.items()},
            "asvp_no_worse_at_any_budget_met": all(d >= 0 for d in asvp_diffs.values()),
        },
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Evidence: proxy AL vs ASVP vs fine-tuned-acquisition AL (issue 5)",
        "",
        "Generated by `bench/evidence.py` from `bench/results/evidence_<dataset>.json`. The "
        "successor is MiniLM-L6 fine-tuned with the same recipe in every arm; accuracy is on "
        "the test split (or the stated stratified sample of it), mean ± std over seeds. The "
        "fine-tuned arm's successor at a budget is the model that loop trained on those labels.",
        "",
    ]
    for res in results:
        s = res["summary"]
        run = res["run"]
        lines += [
            f"## {res['dataset']} — pool {res['pool_rows']}, test {res['test_rows']}, "
            f"{res['classes']} classes",
            "",
            f"`{run['command']}` on {run['machine']} ({run['cpus']} CPU cores, "
            f"{run['threads']} torch thread(s), device {run['device']}); seeds "
            f"{', '.join(map(str, run['seeds']))}; successor {run['epochs']} epochs, batch 16, "
            f"max length {run['max_length']}; ASVP every {run['asvp_every']} rounds, "
            f"threshold {run['asvp_threshold']}.",
            "",
            "| labels | " + " | ".join(ARMS) + " |",
            "|---|" + "---|" * len(ARMS),
        ]
        for b in res["budgets"]:
            cells = []
            for arm in ARMS:
                r = next((r for r in s["curves"][arm] if r["labels"] == b), None)
                cells.append(f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}" if r else "-")
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
        w = s["wall_s"]
        lines += [
            "| AL loop wall time (s) | "
            + " | ".join(f"{w[a]['mean']:.1f} ± {w[a]['std']:.1f}" for a in ARMS)
            + " |",
            "",
            f"One-off pool + test embedding: {res['embed_s']:.1f} s.",
            "",
        ]
        t = s["targets"]
        lines += [
            "| target | measured | met |",
            "|---|---|---|",
            f"| fine-tuned loop ≥ 10× the proxy loop's wall time | "
            f"{t['time_ratio_ft_over_proxy']:.1f}× "
            f"({t['time_ratio_ft_over_proxy_incl_embed']:.1f}× counting the embedding) | "
            f"{'yes' if t['time_ratio_target_10x_met'] else 'no'} |",
            f"| proxy successor within 1 pt of the fine-tuned loop's at the final budget | "
            f"{t['final_accuracy_proxy_minus_ft_points']:+.2f} pt | "
            f"{'yes' if t['final_accuracy_within_1pt_met'] else 'no'} |",
            "| ASVP refresh no worse than static features at any budget | "
            + ", ".join(f"{b}: {d:+.2f} pt" for b, d in t["asvp_minus_static_points"].items())
            + f" | {'yes' if t['asvp_no_worse_at_any_budget_met'] else 'no'} |",
            "",
        ]
        if res["alignment"]:
            lines += [
                "ASVP checks (LogME-PED on the labeled set):",
                "",
                "| seed | round | labels | current | fine-tuned | gap | action | B1 | B2 | "
                "successor | fine-tune s | refresh s |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for d in res["alignment"]:
                lines.append(
                    f"| {d['seed']} | {d['round']} | {d['labels']} | {d['logme_current']:.4f} "
                    f"| {d['logme_finetuned']:.4f} | {d['gap']:+.4f} | {d['action']} "
                    f"| {d['b1_proxy_right_finetuned_wrong']} "
                    f"| {d['b2_finetuned_right_proxy_wrong']} | {d['successor_method']} "
                    f"| {d['finetune_s']:.1f} | {d['refresh_s']:.1f} |"
                )
            lines.append("")
        lines += [f"![{res['dataset']}](evidence_{res['dataset']}.png)", ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["summary"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm in ARMS:
        rows = s["curves"][arm]
        x = np.array([r["labels"] for r in rows])
        m = np.array([r["accuracy_mean"] for r in rows])
        sd = np.array([r["accuracy_std"] for r in rows])
        ax.plot(x, m, marker="o", markersize=3, label=arm)
        ax.fill_between(x, m - sd, m + sd, alpha=0.15)
    ax.set_xlabel("labeled examples")
    ax.set_ylabel("successor test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    means = [s["wall_s"][a]["mean"] for a in ARMS]
    stds = [s["wall_s"][a]["std"] for a in ARMS]
    bx.bar(ARMS, means, yerr=stds, color=["C0", "C1", "C2", "C3"])
    bx.set_yscale("log")
    bx.set_ylabel("AL loop wall time (s, log scale)")
    fig.suptitle(f"{res['dataset']}: pool {res['pool_rows']}, {len(res['budgets'])} budgets")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--pool-limit", type=int, default=None, help="stratified sample of the pool")
    p.add_argument("--test-limit", type=int, default=None, help="stratified sample of the test")
    p.add_argument("--asvp-every", type=int, default=2)
    p.add_argument("--asvp-threshold", type=float, default=0.03)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    p.add_argument("--report-only", action="store_true", help="rebuild the docs from --results")
    args = p.parse_args(argv)
    import torch

    # Services inherit the limit too: oversubscribed OpenMP threads spin and crawl.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    for name in [] if args.report_only else args.datasets:
        res = run_dataset(DATASETS[name], args)
        res["summary"] = summarise(res)
        res["run"] = {
            "command": "python bench/evidence.py " + " ".join(sys.argv[1:]),
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "seeds": args.seeds,
            "epochs": args.epochs,
            "max_length": args.max_length,
            "asvp_every": args.asvp_every,
            "asvp_threshold": args.asvp_threshold,
        }
        path = args.results / f"evidence_{name}.json"
        path.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    results = [
        json.loads((args.results / f"evidence_{name}.json").read_text(encoding="utf-8"))
        for name in DATASETS
        if (args.results / f"evidence_{name}.json").is_file()
    ]
    for res in results:  # re-summarised, so the report follows this code's definitions
        res["summary"] = summarise(res)
    args.docs.mkdir(parents=True, exist_ok=True)
    for res in results:
        plot(res, args.docs / f"evidence_{res['dataset']}.png")
    text = markdown(results)
    (args.docs / "evidence.md").write_text(text, encoding="utf-8")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
