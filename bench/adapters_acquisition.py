"""Adapters for acquisition: do adapter-trained models score the pool like full fine-tuning?

    .venv/bin/python bench/adapters_acquisition.py [--quick] [--datasets banking77 ag_news]
        [--budgets 200 500] [--seeds 3] [--pool-size 2000] [--epochs 6] [--max-length 64]

After Galimzianova and Sanochkin, "Efficient Active Learning with Adapters" (section 3,
Table 4; /work/shared/papers/adapters-for-acquisition.md). For each dataset, label budget
and seed, `budget` seeded random training texts are labeled and the acquisition model is
fine-tuned on them with the successor recipe (successor.training) by full fine-tuning
and by each adapter method the successor accepts (LoRA; bottleneck adapters when
`SuccessorConfig(method="bottleneck")` is accepted, detected at run time). Every model
scores the same `--pool-size` unlabeled training texts with margin, entropy and least
confidence (proxal.runtime.uncertainty), and each method is compared with full fine-tuning:

- Wasserstein distance between the two score distributions (scipy.stats.wasserstein_distance);
- KL(P_full || P_method) of their histograms on shared bins (min(50, sqrt(n)) equal bins
  over both ranges, frequencies + 1e-6, renormalised; scipy.stats.entropy(p, q));
- overlap of the selected batch: |top-k(full) & top-k(method)| / k, seeded tie-break
  (proxal.runtime.ranking.top_k), k = --top-k;
- training time (the successor's training loop) and its ratio to full, test accuracy.

A reference row "full_reseed" (full fine-tuning with another seed, same labels) shows how
far two full fine-tunings already disagree: an adapter's distance is only meaningful next
to it (--no-reference drops it). The paper measured BALD on ELECTRA-base with bottleneck
adapters; here the model is proxal's successor (all-MiniLM-L6-v2 + linear head) and the
scores are the three the proxy offers.

AG News (research-only licence) is read from --ag-news-dir and never copied. Prints a table,
writes JSON (--out) and a markdown report (--doc). `--quick` is a smoke test (tiny sizes,
one epoch; it writes bench/results/adapters_acquisition.quick.json and no doc by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy
import torch
from scipy.stats import entropy as kl_divergence
from scipy.stats import wasserstein_distance

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "protos")]

from proxal.orchestrator_service.successor.training import SuccessorConfig, fine_tune_successor  # noqa: E402
from proxal.runtime.errors import InvalidArgumentError  # noqa: E402
from proxal.runtime.ranking import top_k  # noqa: E402
from proxal.runtime.uncertainty import UNCERTAINTY_SCORES, uncertainty  # noqa: E402

BANKING77_DIR = ROOT / "orchestrator" / "demo" / "data" / "banking77"
AG_NEWS_DIR = Path("/work/shared/datasets/ag_news")
DATASETS = ("banking77", "ag_news")
METHODS = ("full", "lora", "bottleneck")
REFERENCE = "full_reseed"
RESEED = 1000  # the reference's seed offset
BINS = 50
EPSILON = 1e-6
OUT = ROOT / "bench" / "results" / "adapters_acquisition.json"
QUICK_OUT = ROOT / "bench" / "results" / "adapters_acquisition.quick.json"
DOC = ROOT / "docs" / "adapters_acquisition.md"


@dataclass(frozen=True)
class Settings:
    datasets: tuple[str, ...]
    budgets: tuple[int, ...]
    seeds: int
    pool_size: int
    test_size: int
    top_k: int
    epochs: int
    max_length: int
    methods: tuple[str, ...]
    reference: bool
    device: str


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: list[str]
    train_texts: list[str]
    train_labels: npt.NDArray[np.int64]
    test_texts: list[str]
    test_labels: npt.NDArray[np.int64]


def _read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(str(row["label"]))
    return texts, labels


def load_dataset(name: str, ag_news_dir: Path) -> Dataset:
    """Banking77 (bundled copy) or AG News (train_subset_alps10k + test, read in place)."""
    if name == "banking77":
        train_path, test_path = BANKING77_DIR / "train.jsonl", BANKING77_DIR / "test.jsonl"
    elif name == "ag_news":
        train_path = ag_news_dir / "train_subset_alps10k.jsonl"
        test_path = ag_news_dir / "test.jsonl"
    else:
        raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    for path in (train_path, test_path):
        if not path.is_file():
            raise SystemExit(f"{name}: {path} not found (AG News: pass --ag-news-dir)")
    train_texts, train_names = _read_jsonl(train_path)
    test_texts, test_names = _read_jsonl(test_path)
    classes = sorted(set(train_names))
    index = {c: i for i, c in enumerate(classes)}
    return Dataset(
        name=name,
        classes=classes,
        train_texts=train_texts,
        train_labels=np.array([index[c] for c in train_names], dtype=np.int64),
        test_texts=test_texts,
        test_labels=np.array([index.get(c, -1) for c in test_names], dtype=np.int64),
    )


def available_methods(requested: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The methods SuccessorConfig accepts, and why each other one was skipped."""
    usable, skipped = [], {}
    for method in requested:
        try:
            SuccessorConfig(method=method)
        except InvalidArgumentError as exc:
            skipped[method] = str(exc)
        else:
            usable.append(method)
    if "full" not in usable:
        raise SystemExit("the comparison needs method 'full'")
    return usable, skipped


def histogram_kl(p_scores: npt.NDArray[np.float32], q_scores: npt.NDArray[np.float32]) -> float:
    """KL(P || Q) of the two score samples' histograms on shared bins (eps-smoothed).

    min(50, sqrt(n)) equal bins over both samples' range; each bin's frequency gets EPSILON
    before normalising, so a bin one sample leaves empty costs a finite amount.
    """
    both = np.concatenate([p_scores, q_scores]).astype(np.float64)
    lo, hi = float(both.min()), float(both.max())
    bins = max(2, min(BINS, int(np.sqrt(min(len(p_scores), len(q_scores))))))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, bins + 1)
    p = np.histogram(p_scores, bins=edges)[0] / len(p_scores) + EPSILON
    q = np.histogram(q_scores, bins=edges)[0] / len(q_scores) + EPSILON
    return float(kl_divergence(p / p.sum(), q / q.sum()))


def accuracy(proba: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    return float((proba.argmax(axis=1) == labels).mean())


def run_seed(
    data: Dataset, seed: int, settings: Settings, methods: Sequence[str]
) -> list[dict[str, Any]]:
    """Every (budget, method, strategy) row of one dataset and seed."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.train_texts))
    top_budget = max(settings.budgets)
    pool = order[top_budget : top_budget + settings.pool_size]
    if len(pool) < settings.top_k:
        raise SystemExit(
            f"{data.name}: {len(data.train_texts)} training texts leave a pool of {len(pool)} "
            f"after the largest budget {top_budget}; lower --budgets or --top-k"
        )
    test = np.random.default_rng(0).permutation(len(data.test_texts))[: settings.test_size]
    test = test[data.test_labels[test] >= 0]
    pool_texts = [data.train_texts[i] for i in pool]
    pool_ids = pool.astype(np.int64)
    test_texts = [data.test_texts[i] for i in test]
    rows: list[dict[str, Any]] = []
    for budget in settings.budgets:
        labeled = order[:budget]
        texts = [data.train_texts[i] for i in labeled]
        labels = [int(y) for y in data.train_labels[labeled]]
        runs: dict[str, dict[str, Any]] = {}
        names = [*methods, *([REFERENCE] if settings.reference else [])]
        for name in names:
            method = "full" if name == REFERENCE else name
            config = SuccessorConfig(
                method=method,
                epochs=settings.epochs,
                max_length=settings.max_length,
                seed=seed + (RESEED if name == REFERENCE else 0),
                device=settings.device,
            )
            t0 = time.perf_counter()
            model = fine_tune_successor(texts, labels, len(data.classes), config, progress=False)
            wall = time.perf_counter() - t0
            t1 = time.perf_counter()
            proba = model.predict_proba(pool_texts)
            score_s = time.perf_counter() - t1
            runs[name] = {
                "train_s": model.train_seconds,
                "fit_wall_s": wall,
                "score_s": score_s,
                "accuracy": accuracy(model.predict_proba(test_texts), data.test_labels[test]),
                "scores": {s: uncertainty(s, proba) for s in UNCERTAINTY_SCORES},
            }
            del model
        full = runs["full"]
        k = min(settings.top_k, len(pool))
        for name, run in runs.items():
            for strategy in UNCERTAINTY_SCORES:
                a, b = full["scores"][strategy], run["scores"][strategy]
                top_full = set(pool_ids[top_k(a, pool_ids, k, seed)].tolist())
                top_run = set(pool_ids[top_k(b, pool_ids, k, seed)].tolist())
                rows.append(
                    {
                        "dataset": data.name,
                        "budget": budget,
                        "seed": seed,
                        "method": name,
                        "strategy": strategy,
                        "wasserstein": float(wasserstein_distance(a, b)),
                        "kl": histogram_kl(a, b),
                        "topk_overlap": len(top_full & top_run) / k,
                        "k": k,
                        "score_mean": float(b.mean()),
                        "train_s": run["train_s"],
                        "train_ratio": run["train_s"] / full["train_s"],
                        "fit_wall_s": run["fit_wall_s"],
                        "score_s": run["score_s"],
                        "accuracy": run["accuracy"],
                        "full_accuracy": full["accuracy"],
                        "pool": len(pool),
                        "test": len(test),
                    }
                )
    return rows


METRICS = ("wasserstein", "kl", "topk_overlap", "train_s", "train_ratio", "accuracy")


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (dataset, budget, method, strategy)."""
    groups: dict[tuple[str, int, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["dataset"], row["budget"], row["method"], row["strategy"])
        groups.setdefault(key, []).append(row)
    out = []
    for (dataset, budget, method, strategy), group in groups.items():
        entry: dict[str, Any] = {
            "dataset": dataset,
            "budget": budget,
            "method": method,
            "strategy": strategy,
            "seeds": len(group),
        }
        for metric in METRICS:
            values = np.array([r[metric] for r in group], dtype=np.float64)
            entry[metric] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std())
        out.append(entry)
    return out


HEADER = (
    "dataset",
    "budget",
    "method",
    "strategy",
    "WD",
    "KL",
    "top-k",
    "train s",
    "x full",
    "acc",
)


def table_lines(summary: list[dict[str, Any]], markdown: bool = False) -> list[str]:
    """The summary as aligned plain text or a markdown table (mean ± std over seeds)."""

    def pm(entry: dict[str, Any], metric: str, fmt: str) -> str:
        mean, std = entry[metric], entry[f"{metric}_std"]
        return f"{mean:{fmt}}" if entry["seeds"] < 2 else f"{mean:{fmt}} ± {std:{fmt}}"

    body = [
        (
            e["dataset"],
            str(e["budget"]),
            e["method"],
            e["strategy"],
            pm(e, "wasserstein", ".4f"),
            pm(e, "kl", ".3f"),
            pm(e, "topk_overlap", ".2f"),
            pm(e, "train_s", ".1f"),
            pm(e, "train_ratio", ".2f"),
            pm(e, "accuracy", ".3f"),
        )
        for e in summary
        if e["method"] != "full"
    ]
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        return lines + ["| " + " | ".join(r) + " |" for r in body]
    widths = [max(len(str(c)) for c in col) for col in zip(HEADER, *body, strict=True)]
    return [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (HEADER, *body)
    ]


def full_lines(summary: list[dict[str, Any]]) -> list[str]:
    """Full fine-tuning's own train time and accuracy per (dataset, budget), markdown."""
    seen = {}
    for e in summary:
        if e["method"] == "full":
            seen[(e["dataset"], e["budget"])] = e
    lines = ["| dataset | budget | train s | acc |", "|---|---|---|---|"]
    for (dataset, budget), e in seen.items():
        lines.append(
            f"| {dataset} | {budget} | {e['train_s']:.1f} ± {e['train_s_std']:.1f} | "
            f"{e['accuracy']:.3f} ± {e['accuracy_std']:.3f} |"
        )
    return lines


def write_doc(path: Path, report: dict[str, Any]) -> None:
    s = report["settings"]
    skipped = report["skipped_methods"]
    skipped_text = (
        "".join(f"\n- `{m}` skipped: {why}" for m, why in skipped.items()) if skipped else ""
    )
    text = f"""# Adapters for acquisition: do adapters score the pool like full fine-tuning?

Generated by `bench/adapters_acquisition.py` on {report["machine"]} ({report["device"]}),
torch {report["torch"]}. After Galimzianova and Sanochkin, *Efficient Active Learning with
Adapters* (section 3.2, Table 4), who report near-zero Wasserstein distance and KL divergence
between the BALD scores of full and bottleneck-adapter ELECTRA-base models.

Setup: for each dataset, label budget and seed, `budget` seeded random training texts are
labeled; the acquisition model (proxal's successor recipe: all-MiniLM-L6-v2 + linear head,
{s["epochs"]} epochs, max_length {s["max_length"]}) is fine-tuned on them with full
fine-tuning and with each adapter method; every model scores the same {s["pool_size"]}
unlabeled training texts with margin, entropy and least confidence. Columns compare the
method with full fine-tuning on the same labels and seed:

- **WD**: Wasserstein distance of the two score distributions;
- **KL**: KL(P_full || P_method) of their histograms (min({BINS}, sqrt(pool)) shared equal
  bins, frequencies + {EPSILON});
- **top-k**: overlap of the two selected batches of k = {s["top_k"]} (seeded tie-break);
- **train s** / **x full**: the training loop's seconds and its ratio to full fine-tuning;
- **acc**: test accuracy of the method's model ({s["test_size"]} test texts at most).

`full_reseed` is full fine-tuning with another seed on the same labels: the distance two
full fine-tunings already have. An adapter whose WD/KL/top-k sit at that level scores the pool
like full fine-tuning does. Mean ± std over {s["seeds"]} seeds.
Methods: {", ".join(report["methods"])}.{skipped_text}

{chr(10).join(table_lines(report["summary"], markdown=True))}

Full fine-tuning itself:

{chr(10).join(full_lines(report["summary"]))}

## Reproduce

```
HF_HUB_OFFLINE=1 .venv/bin/python bench/adapters_acquisition.py \\
    --datasets {" ".join(s["datasets"])} --budgets {" ".join(map(str, s["budgets"]))} \\
    --seeds {s["seeds"]} --pool-size {s["pool_size"]} --test-size {s["test_size"]} \\
    --top-k {s["top_k"]} --epochs {s["epochs"]} --max-length {s["max_length"]}
```

Raw rows (per seed and strategy) are in `bench/results/adapters_acquisition.json`. AG News
is read from `/work/shared/datasets/ag_news` (`--ag-news-dir`; research-only licence, not in
the repository); Banking77 from `orchestrator/demo/data/banking77`. A smoke test:
`pytest -m bench tests/bench/test_bench_adapters.py` (runs `--quick`).
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one epoch: smoke test")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--budgets", nargs="+", type=int, default=None, help="labels per run")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3)")
    parser.add_argument("--pool-size", type=int, default=None, help="unlabeled texts scored")
    parser.add_argument("--test-size", type=int, default=None, help="test texts at most")
    parser.add_argument("--top-k", type=int, default=None, help="selected batch size")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--no-reference", action="store_true", help="skip full_reseed")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--ag-news-dir", type=Path, default=AG_NEWS_DIR)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--doc", type=Path, default=None, help="markdown report")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    default_datasets = ["banking77"]
    if not quick or args.ag_news_dir.is_dir():
        default_datasets.append("ag_news")
    settings = Settings(
        datasets=tuple(pick(args.datasets, default_datasets, default_datasets)),
        budgets=tuple(pick(args.budgets, [200, 500], [16])),
        seeds=pick(args.seeds, 3, 1),
        pool_size=pick(args.pool_size, 2000, 40),
        test_size=pick(args.test_size, 2000, 40),
        top_k=pick(args.top_k, 100, 5),
        epochs=pick(args.epochs, SuccessorConfig().epochs, 1),
        max_length=pick(args.max_length, SuccessorConfig().max_length, 32),
        methods=tuple(args.methods),
        reference=not args.no_reference,
        device=args.device,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    methods, skipped = available_methods(settings.methods)
    for method, why in skipped.items():
        print(f"skipping method {method}: {why}")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in settings.datasets:
        data = load_dataset(name, args.ag_news_dir)
        for seed in range(settings.seeds):
            print(f"{name} seed {seed}: budgets {list(settings.budgets)}", flush=True)
            rows += run_seed(data, seed, settings, methods)
    summary = summarise(rows)
    for line in table_lines(summary):
        print(line)
    report = {
        "machine": platform.platform(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "scipy": scipy.__version__,
        "device": "cuda" if settings.device != "cpu" and torch.cuda.is_available() else "cpu",
        "quick": quick,
        "settings": asdict(settings),
        "methods": [*methods, *([REFERENCE] if settings.reference else [])],
        "skipped_methods": skipped,
        "wall_s": time.perf_counter() - start,
        "summary": summary,
        "rows": rows,
    }
    out = args.out or (QUICK_OUT if quick else OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    doc = args.doc or (None if quick else DOC)
    if doc is not None:
        write_doc(doc, report)
        print(f"wrote {doc}")
    return report


if __name__ == "__main__":
    main()
