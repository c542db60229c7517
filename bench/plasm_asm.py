"""Evidence for issue 6: PLASM under acquisition-successor mismatch, acquisition sequence
mismatch (ASM) between two encoders, and margin's sample saving ratio over random.

Phase 1 (``--acquire``, per dataset; heavy): ingest the pool, embed it twice -- MiniLM-L6
(torch) and the distilled MiniLM-L3 (ONNX) -- and run the proxy loop on each embedding for
random, margin, entropy and BADGE over the same seeded initial sets. Each encoder's loop is
written as a run directory (``WORK/<dataset>/runs/L6``, ``.../L3``). Then, for every seed
and each PLASM budget b, MiniLM-L6 successors are fine-tuned on the first b labels margin
acquired:

- ``L6→L6``          acquired with L6 embeddings (matched acquisition);
- ``L3→L6``          acquired with L3 embeddings (mismatch), gold labels only;
- ``L3→L6 +PLASM``   the same gold labels + PLASM pseudo-labels: a MiniLM-L6 teacher
                     (20% of the gold held out to score it) pseudo-labels a seeded sample of
                     the unlabeled pool, the uncertainty filter keeps as many as its held-out
                     accuracy says are right, the successor trains on gold + kept;
- ``L3→L6 +PLASM-cl`` (final budget only) the same teacher, cleanlab's confident-learning
                     filter instead.

The successors are appended to the run directories (``successors.jsonl``), so
``proxal report WORK/<dataset>/runs/l3`` shows them too.

Phase 2 (``--analyse``; light): from the run directories, computes ASM (GloVe 50d,
Hungarian matching) of L3 vs L6 acquisition for each strategy and seed, the transferability
ΔAUC of L3-acquired data used by an L6 proxy (and the reverse), margin's sample saving ratio
over random on each encoder's proxy learning curves, and the PLASM table; writes
``bench/results/plasm_asm_<dataset>.json``, ``docs/plasm_asm.md`` and its plots, and each
run's ``proxal report`` under ``docs/runs/``.

    python bench/plasm_asm.py --acquire --datasets banking77 --threads 1 &
    python bench/plasm_asm.py --acquire --datasets ag_news --threads 1 --test-limit 1000; wait
    python bench/plasm_asm.py --analyse
    python bench/plasm_asm.py --acquire --analyse --datasets banking77 --seeds 0 \\
        --pool-limit 1500 --test-limit 300 --rounds 3 --plasm-budgets 200 300 --quick  # smoke
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "protos"), str(REPO / "bench")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evidence import DATASETS as EVIDENCE_DATASETS  # noqa: E402
from evidence import _write_split  # noqa: E402
from proxal.orchestrator_service.analysis.runs import (  # noqa: E402
    Run,
    SuccessorRow,
    append_successors,
    load_run,
    write_run,
)
from proxal.orchestrator_service.engine.simulation import LoopConfig, PoolData, run_simulation  # noqa: E402
from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient  # noqa: E402
from proxal.orchestrator_service.rpc.processes import ServiceProcess  # noqa: E402
from proxal.orchestrator_service.successor.plasm import PlasmConfig, run_plasm  # noqa: E402
from proxal.orchestrator_service.successor.training import SuccessorConfig, fine_tune_successor  # noqa: E402
from proxal.store import Store  # noqa: E402

STRATEGIES = ("random", "margin", "entropy", "badge")
ENCODERS = {  # run name → EmbedPool arguments
    "L6": {"model": "minilm-l6", "backend": "torch"},
    "L3": {"model": "minilm-l3", "backend": "onnx"},
}


@dataclass(frozen=True)
class Plan:
    """A dataset's AL grid: initial set, batch, rounds, and the PLASM successor budgets."""

    initial: int
    batch: int
    rounds: int
    plasm_budgets: tuple[int, ...]


PLANS = {
    "banking77": Plan(initial=200, batch=100, rounds=8, plasm_budgets=(200, 300, 500)),
    "ag_news": Plan(initial=50, batch=50, rounds=10, plasm_budgets=(50, 150, 300)),
}


def _texts(store: Store, pool: str) -> dict[int, str]:
    rows = store.pool_rows(pool, columns=["id", "text"])
    return dict(zip(rows.column("id").to_pylist(), rows.column("text").to_pylist(), strict=True))


def acquire(name: str, args: argparse.Namespace) -> None:
    """Phase 1 for one dataset: embeddings, both encoders' AL runs, and the successors."""
    ds = EVIDENCE_DATASETS[name]
    plan = PLANS[name]
    if args.rounds is not None:
        plan = replace(plan, rounds=args.rounds)
    if args.plasm_budgets:
        plan = replace(plan, plasm_budgets=tuple(args.plasm_budgets))
    work = args.work / name
    if work.exists():
        raise SystemExit(f"{work} exists: remove it or pass another --work")
    (work / "data").mkdir(parents=True)
    n_train = _write_split(ds.train, work / "data" / "train.jsonl", args.pool_limit)
    n_test = _write_split(ds.test, work / "data" / "test.jsonl", args.test_limit)
    store_uri = str(work / "store")
    loop = LoopConfig(
        strategies=STRATEGIES,
        seeds=tuple(args.seeds),
        initial_size=plan.initial,
        batch_size=plan.batch,
        rounds=plan.rounds,
    )
    print(f"== {name}: pool {n_train}, test {n_test}, plan {plan}", flush=True)
    runs: dict[str, Path] = {}
    with (
        ServiceProcess("encoder_service", store_uri, log_path=work / "encoder.log") as enc,
        ServiceProcess("proxy_service", store_uri, log_path=work / "proxy.log") as prx,
    ):
        encoder, proxy = EncoderClient(enc.address), ProxyClient(prx.address)
        for split in ("train", "test"):
            encoder.ingest_file(name, split, work / "data" / f"{split}.jsonl")
        store = Store(store_uri)
        for label, embed_args in ENCODERS.items():
            t0 = time.perf_counter()
            version = encoder.embed(name, max_length=args.max_length, **embed_args).version
            embed_s = time.perf_counter() - t0
            print(f"[{name}] {label} embedding {version}: {embed_s:.1f} s", flush=True)
            data = PoolData.from_store(store, name, version)
            result = run_simulation(store, proxy, data, loop, f"{name}-{label.lower()}")
            print(f"[{name}] {label} AL loops: {result.wall_s:.1f} s", flush=True)
            run = result.to_run(
                store,
                data,
                f"{name}-{label.lower()}",
                dataset=name,
                encoder={**embed_args, "max_length": args.max_length},
                embed_s=embed_s,
                config={**asdict(loop), "plan": asdict(plan)},
            )
            runs[label] = write_run(run, work / "runs" / label.lower())
        encoder.close()
        proxy.close()
    successors(name, load_run(runs["L6"]), load_run(runs["L3"]), plan, args)


def _successor_row(
    name: str,
    test_texts: list[str],
    test_gold: list[int],
    run_strategy: str,
    seed: int,
    b: int,
    model: Any,
    method: str,
    plasm: Any,
) -> Any:
    """`model` scored on the test split, as a SuccessorRow (and one printed line)."""
    t0 = time.perf_counter()
    scores = model.evaluate(test_texts, test_gold)
    out = SuccessorRow(
        run_strategy,
        seed,
        b,
        "minilm-l6",
        method,
        scores["accuracy"],
        scores["macro_f1"],
        model.train_seconds,
        plasm,
    )
    tag = method if plasm is None else f"{method}+plasm-{plasm['filter']}"
    print(
        f"[{name} s{seed}] {run_strategy}@{b} {tag}: acc {scores['accuracy']:.4f} "
        f"(train {model.train_seconds:.0f} s, eval {time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return out


def successors(name: str, l6: Run, l3: Run, plan: Plan, args: argparse.Namespace) -> None:
    """Fine-tune the L6→L6, L3→L6 and L3→L6 + PLASM successors; append them to the runs."""
    store = Store(l6.store)
    texts_of = _texts(store, name)
    data = PoolData.from_store(store, name, l6.embedding_version)
    gold_of = dict(zip(data.train_ids.tolist(), data.train_gold.tolist(), strict=True))
    test_texts = [texts_of[i] for i in data.test_ids.tolist()]
    test_gold = data.test_gold.tolist()
    num_classes = len(data.classes)
    recipe = SuccessorConfig(epochs=args.epochs, batch_size=16, max_length=args.max_length)
    teacher_recipe = replace(
        recipe,
        epochs=args.teacher_epochs,
        validation_fraction=0.2,
        validation_metric="accuracy",
        patience=2,
    )

    row = functools.partial(_successor_row, name, test_texts, test_gold)
    for seed in args.seeds:
        cfg = replace(recipe, seed=seed)
        for b in plan.plasm_budgets:
            l6_ids = l6.labeled_ids("margin", seed, b).tolist()
            plain = fine_tune_successor(
                [texts_of[i] for i in l6_ids],
                [gold_of[i] for i in l6_ids],
                num_classes,
                cfg,
                progress=False,
            )
            append_successors(l6.directory, [row("margin", seed, b, plain, "full", None)])

            l3_ids = l3.labeled_ids("margin", seed, b).tolist()
            gold_texts = [texts_of[i] for i in l3_ids]
            gold_labels = [gold_of[i] for i in l3_ids]
            mismatched = fine_tune_successor(
                gold_texts, gold_labels, num_classes, cfg, progress=False
            )
            rows = [row("margin", seed, b, mismatched, "full", None)]
            taken = set(l3_ids)
            pool_ids = [i for i in data.train_ids.tolist() if i not in taken]
            pool_texts = [texts_of[i] for i in pool_ids]
            pool_gold = [gold_of[i] for i in pool_ids]
            plasm_cfg = PlasmConfig(
                teacher=teacher_recipe,
                successor=recipe,
                filter="uncertainty",
                pool_sample=args.pool_sample,
                seed=seed,
            )
            result = run_plasm(
                gold_texts, gold_labels, pool_texts, num_classes, plasm_cfg, pool_gold=pool_gold
            )
            report = result.report.as_dict()
            rows.append(row("margin", seed, b, result.successor, "full", report))
            if b == plan.plasm_budgets[-1]:
                cl = run_plasm(
                    gold_texts,
                    gold_labels,
                    pool_texts,
                    num_classes,
                    replace(plasm_cfg, filter="cleanlab"),
                    pool_gold=pool_gold,
                    teacher=result.teacher,
                )
                rows.append(row("margin", seed, b, cl.successor, "full", cl.report.as_dict()))
            append_successors(l3.directory, rows)


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def plasm_table(l6: Run, l3: Run) -> list[dict[str, Any]]:
    """Per budget: successor accuracy mean ± std over seeds for each arm, PLASM's records."""
    arms: dict[str, dict[int, list[SuccessorRow]]] = {}
    for run, label in ((l6, "L6→L6"), (l3, "L3→L6")):
        for r in run.successors:
            arm = label if r.plasm is None else f"{label} +PLASM-{r.plasm['filter']}"
            arms.setdefault(arm, {}).setdefault(r.labels, []).append(r)
    out = []
    for arm, by_budget in arms.items():
        for b, rows in sorted(by_budget.items()):
            entry: dict[str, Any] = {
                "arm": arm,
                "labels": b,
                "accuracy": _mean_std([r.accuracy for r in rows]),
                "macro_f1": _mean_std([r.macro_f1 for r in rows]),
                "train_s": _mean_std([r.train_s for r in rows]),
            }
            if rows[0].plasm is not None:
                for key in (
                    "teacher_heldout_accuracy",
                    "kept",
                    "kept_fraction",
                    "pseudo_accuracy_all",
                    "pseudo_accuracy_kept",
                ):
                    entry[key] = _mean_std([float(r.plasm[key]) for r in rows if r.plasm])
            out.append(entry)
    return out


def transfers(
    proxy: ProxyClient, store: Store, l3: Run, l6: Run, strategies: tuple[str, ...]
) -> list[dict[str, Any]]:
    """ΔAUC of each run's sequences used by the other encoder's proxy."""
    from proxal.orchestrator_service.analysis.asm import transferability

    out = []
    for a, b, direction in ((l3, l6, "L3→L6"), (l6, l3, "L6→L3")):
        for strategy in strategies:
            for seed in a.seeds(strategy):
                t = transferability(proxy, store, a, b, strategy, seed)
                out.append({"direction": direction, **t.as_dict()})
    return out


def long_random(proxy: ProxyClient, store: Store, run: Run, factor: float) -> list[dict[str, Any]]:
    """Random sampling's learning curve (summary rows) out to `factor` x the run's final
    budget, same seeds, initial sets and batches, so the sample saving ratio can be read off
    where random needs more labels than the strategy had."""
    from proxal.orchestrator_service.analysis.evaluation import summarise

    plan = run.config["plan"]
    final = max(r.labels for r in run.rounds)
    pool = PoolData.from_store(store, run.pool, run.embedding_version)
    rounds = min(
        int(np.ceil((factor * final - plan["initial"]) / plan["batch"])),
        (len(pool.train_ids) - plan["initial"]) // plan["batch"],
    )
    loop = LoopConfig(
        strategies=("random",),
        seeds=tuple(run.seeds("random")),
        initial_size=plan["initial"],
        batch_size=plan["batch"],
        rounds=rounds,
    )
    name = f"{run.name}-rlong-{time.strftime('%H%M%S')}"
    return summarise(run_simulation(store, proxy, pool, loop, name).points)["random"]


def _asm_summary(mismatch: dict[Any, Any], informative: tuple[str, ...]) -> dict[str, Any]:
    """ASM mean ± std over seeds, the mean per-batch curve and missing texts, per strategy."""
    return {
        s: {
            "asm": _mean_std([r.asm for (st, _), r in mismatch.items() if st == s]),
            "per_batch_mean": np.mean(
                [r.per_batch for (st, _), r in mismatch.items() if st == s], axis=0
            ).tolist(),
            "missing_texts": len(
                {i for (st, _), r in mismatch.items() if st == s for i in r.missing_ids}
            ),
        }
        for s in informative
    }


def _transfer_summary(
    transfer: list[dict[str, Any]], informative: tuple[str, ...]
) -> dict[str, Any]:
    """ΔAUC mean ± std over seeds per "direction/strategy" and metric."""
    return {
        f"{d}/{s}": {
            m: _mean_std(
                [t["delta_auc"][m] for t in transfer if t["direction"] == d and t["strategy"] == s]
            )
            for m in ("accuracy", "macro_f1")
        }
        for d in ("L3→L6", "L6→L3")
        for s in informative
    }


def analyse_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 2 for one dataset → every number, and each run's `proxal report` under docs/."""
    from proxal.orchestrator_service.analysis.asm import GloveSpace, run_mismatch
    from proxal.orchestrator_service.analysis.evaluation import (
        evaluate_run,
        sample_saving_ratio,
        summarise,
    )
    from proxal.orchestrator_service.analysis.report import write_report

    runs = args.work / name / "runs"
    l6, l3 = load_run(runs / "l6"), load_run(runs / "l3")
    informative = tuple(s for s in STRATEGIES if s != "random")  # random is encoder-blind
    mismatch = run_mismatch(l3, l6, GloveSpace(), strategies=list(informative))
    asm = _asm_summary(mismatch, informative)
    store = Store(l6.store)
    log = args.work / name / "proxy-analysis.log"
    with ServiceProcess("proxy_service", l6.store, log_path=log) as service:
        proxy = ProxyClient(service.address)
        transfer = transfers(proxy, store, l3, l6, informative)
        random_rows = {
            label: long_random(proxy, store, run, args.random_factor)
            for label, run in (("L6", l6), ("L3", l3))
        }
        proxy.close()
    transfer_summary = _transfer_summary(transfer, informative)
    evaluations = {label: evaluate_run(run) for label, run in (("L6", l6), ("L3", l3))}
    for label, run in (("l6", l6), ("l3", l3)):
        write_report(run, args.docs / "runs" / f"{name}-{label}", fmt="md")
    meta_path = args.work / name / "meta.json"
    return {
        "dataset": name,
        "run": json.loads(meta_path.read_text()) if meta_path.is_file() else {},
        "pool": l6.pool,
        "classes": len(l6.classes),
        "seeds": l6.seeds("margin"),
        "plan": l6.config.get("plan"),
        "embed_s": {"L6": l6.embed_s, "L3": l3.embed_s},
        "random_long": random_rows,
        "ssr": {
            label: {
                s: asdict(sample_saving_ratio(summarise(run.rounds)[s], random_rows[label]))
                for s in informative
            }
            for label, run in (("L6", l6), ("L3", l3))
        },
        "auc": {
            label: {s: ev["strategies"][s].get("auc") for s in STRATEGIES}
            for label, ev in evaluations.items()
        },
        "delta_auc": {
            label: {s: ev["strategies"][s].get("delta_auc") for s in informative}
            for label, ev in evaluations.items()
        },
        "asm": asm,
        "asm_sessions": [
            {"strategy": s, "seed": seed, **r.as_dict()} for (s, seed), r in mismatch.items()
        ],
        "transfer": transfer_summary,
        "transfer_sessions": transfer,
        "plasm": plasm_table(l6, l3),
    }


def _pm(stat: dict[str, float] | None, digits: int = 3) -> str:
    return "–" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def targets(res: dict[str, Any]) -> list[str]:
    """The issue's PLASM and ASM targets, checked against this dataset's numbers."""
    acc = {(e["arm"], e["labels"]): e["accuracy"]["mean"] for e in res["plasm"]}
    budgets = sorted({b for _, b in acc})
    gain = {b: acc[("L3→L6 +PLASM-uncertainty", b)] - acc[("L3→L6", b)] for b in budgets}
    final = budgets[-1]
    gap = acc[("L3→L6 +PLASM-uncertainty", final)] - acc[("L6→L6", final)]
    badge, entropy = res["asm"]["badge"]["asm"]["mean"], res["asm"]["entropy"]["asm"]["mean"]
    noise = max(res["asm"]["badge"]["asm"]["std"], res["asm"]["entropy"]["asm"]["std"])
    within = (
        " (the difference is within one std over seeds)" if abs(badge - entropy) < noise else ""
    )
    return [
        "Targets: PLASM at least as good as without at every budget: "
        + ("**met**" if min(gain.values()) >= 0 else "**missed**")
        + " ("
        + ", ".join(f"{b}: {100 * g:+.1f} pt" for b, g in gain.items())
        + "); within 1 point of matched L6 acquisition at the final budget: "
        + ("**met**" if abs(gap) <= 0.01 or gap > 0 else "**missed**")
        + f" ({100 * gap:+.1f} pt at {final}); BADGE's ASM below entropy's: "
        + ("**yes**" if badge < entropy else "**no**")
        + f" ({badge:.4f} vs {entropy:.4f}){within}.",
        "",
        "The teacher's held-out accuracy (which sets the uncertainty filter's keep fraction) "
        "is optimistic: it is measured on 20% of the acquired labels, stratified so that no "
        "class loses its last training example, and early stopping picks the epoch on the "
        "same split; the pseudo-labels' measured accuracy against gold is in the last column.",
    ]


def markdown(results: list[dict[str, Any]]) -> str:
    """docs/plasm_asm.md: the PLASM, ASM and SSR tables and the issue's targets."""
    lines = [
        "# PLASM, acquisition sequence mismatch and sample savings (issue 6)",
        "",
        "Generated by `bench/plasm_asm.py` (see its docstring for the protocol); every number is "
        "in `bench/results/plasm_asm_<dataset>.json`. Each encoder's AL run is rendered by "
        "`proxal report` under [docs/runs/](runs/).",
        "",
    ]
    for res in results:
        lines += _dataset_head(res)
        lines += _plasm_lines(res)
        lines += _asm_lines(res)
        lines += _ssr_lines(res)
        lines.append("")
    return "\n".join(lines) + "\n"


def _dataset_head(res: dict[str, Any]) -> list[str]:
    plan = res["plan"] or {}
    run = res["run"]
    lines = [
        f"## {res['dataset']}",
        "",
        f"{res['classes']} classes; seeds {res['seeds']}; initial {plan.get('initial')}, "
        f"batch {plan.get('batch')}, {plan.get('rounds')} rounds; pool embedding "
        f"{res['embed_s']['L6']:.0f} s (L6, torch) / {res['embed_s']['L3']:.0f} s (L3, ONNX); "
        f"{run.get('threads', '?')} thread(s), {run.get('device', '?')}.",
        "",
        "### 1. PLASM under acquisition-successor mismatch (MiniLM-L6 successors)",
        "",
        "| arm | labels | accuracy | macro-F1 | teacher held-out acc | kept pseudo-labels "
        "| pseudo-label acc (kept / all) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    return lines


def _plasm_lines(res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for e in res["plasm"]:
        extra = ["–", "–", "–"]
        if "kept" in e:
            extra = [
                _pm(e["teacher_heldout_accuracy"]),
                f"{e['kept']['mean']:.0f}",
                f"{e['pseudo_accuracy_kept']['mean']:.3f} / {e['pseudo_accuracy_all']['mean']:.3f}",
            ]
        lines.append(
            f"| {e['arm']} | {e['labels']} | {_pm(e['accuracy'])} | {_pm(e['macro_f1'])} | "
            + " | ".join(extra)
            + " |"
        )
    lines += [
        "",
        *targets(res),
        "",
        f"![PLASM on {res['dataset']}](plasm_asm_{res['dataset']}.png)",
        "",
    ]
    return lines


def _asm_lines(res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "### 2. Acquisition sequence mismatch, L3 vs L6 acquisition (GloVe 50d, Hungarian)",
        "",
        "| strategy | ASM (mean ± std over seeds) | ΔAUC transfer L3→L6 (acc) "
        "| ΔAUC transfer L6→L3 (acc) | ΔAUC native L6 (acc) | ΔAUC native L3 (acc) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s, a in res["asm"].items():
        native = [res["delta_auc"][enc].get(s) for enc in ("L6", "L3")]
        lines.append(
            f"| {s} | {_pm(a['asm'], 4)} | {_pm(res['transfer'][f'L3→L6/{s}']['accuracy'], 4)}"
            f" | {_pm(res['transfer'][f'L6→L3/{s}']['accuracy'], 4)} | "
            + " | ".join("–" if v is None else f"{v['accuracy']:+.4f}" for v in native)
            + " |"
        )
    return lines


def _ssr_lines(res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lines += [
        "",
        "### 3. Sample saving ratio of each strategy over random at the final budget",
        "",
        "Labels random sampling needs to reach the strategy's proxy accuracy at the final "
        "budget, over that budget (random's curve is run out to "
        f"{max(r['labels'] for r in res['random_long']['L6'])} labels for this).",
        "",
        "| strategy | SSR (L6 proxy) | SSR (L3 proxy) |",
        "|---|---:|---:|",
    ]
    for s in res["ssr"]["L6"]:
        cells = []
        for enc in ("L6", "L3"):
            r = res["ssr"][enc].get(s)
            cells.append(
                "–"
                if r is None
                else ("" if r["reached"] else "≥ ") + f"{r['ratio']:.2f} ({r['strategy_labels']}"
                f" labels, acc {r['strategy_accuracy']:.3f})"
            )
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def plot(res: dict[str, Any], path: Path) -> None:
    """PLASM arms vs budget (left) and per-batch ASM of each strategy (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm in dict.fromkeys(e["arm"] for e in res["plasm"]):
        rows = [e for e in res["plasm"] if e["arm"] == arm]
        x = [e["labels"] for e in rows]
        y = [e["accuracy"]["mean"] for e in rows]
        err = [e["accuracy"]["std"] for e in rows]
        left.errorbar(x, y, yerr=err, marker="o", capsize=3, label=arm)
    left.set_xlabel("gold labels")
    left.set_ylabel("successor test accuracy")
    left.legend()
    left.grid(alpha=0.3)
    for s, a in res["asm"].items():
        right.plot(range(1, len(a["per_batch_mean"]) + 1), a["per_batch_mean"], marker="o", label=s)
    right.set_xlabel("AL step (batch)")
    right.set_ylabel("batch mismatch L3 vs L6 (mean over seeds)")
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(f"{res['dataset']}: PLASM and acquisition sequence mismatch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def analyse(args: argparse.Namespace) -> None:
    """Phase 2 over every dataset whose work directory exists; writes results and docs."""
    args.results.mkdir(parents=True, exist_ok=True)
    args.docs.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        if (args.work / name / "runs" / "l3" / "successors.jsonl").is_file():
            res = analyse_dataset(name, args)
            out = args.results / f"plasm_asm_{name}.json"
            out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    results = [
        json.loads((args.results / f"plasm_asm_{name}.json").read_text(encoding="utf-8"))
        for name in PLANS
        if (args.results / f"plasm_asm_{name}.json").is_file()
    ]
    for res in results:
        plot(res, args.docs / f"plasm_asm_{res['dataset']}.png")
    text = markdown(results)
    (args.docs / "plasm_asm.md").write_text(text, encoding="utf-8")
    print(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--acquire", action="store_true", help="phase 1: embed, AL runs, successors")
    p.add_argument("--analyse", action="store_true", help="phase 2: ASM, SSR, PLASM tables")
    p.add_argument(
        "--successors-only",
        action="store_true",
        help="phase 1's successors for --seeds on the run directories under --work (to spread "
        "seeds over processes: give each a copy of the runs/ directory, then concatenate "
        "their successors.jsonl)",
    )
    p.add_argument("--datasets", nargs="+", default=list(PLANS), choices=list(PLANS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=None, help="override the plan's rounds")
    p.add_argument("--plasm-budgets", nargs="+", type=int, default=None)
    p.add_argument("--epochs", type=int, default=4, help="successor epochs")
    p.add_argument("--teacher-epochs", type=int, default=6, help="PLASM teacher epochs (max)")
    p.add_argument("--pool-sample", type=int, default=1500, help="texts PLASM pseudo-labels")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--pool-limit", type=int, default=None, help="stratified sample of the pool")
    p.add_argument("--test-limit", type=int, default=None, help="stratified sample of the test")
    p.add_argument(
        "--random-factor",
        type=float,
        default=3.0,
        help="analysis: run random out to this multiple of the final budget (for the SSR)",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--work", type=Path, default=Path("/tmp/proxal-plasm-asm"))
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--docs", type=Path, default=REPO / "docs")
    p.add_argument("--quick", action="store_true", help="smoke settings: 1 epoch, small sample")
    args = p.parse_args(argv)
    if not (args.acquire or args.analyse or args.successors_only):
        p.error("pass --acquire, --successors-only and/or --analyse")
    if args.quick:
        args.epochs, args.teacher_epochs, args.pool_sample = 1, 2, 200
    import torch

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the services inherit it
    torch.set_num_threads(args.threads)
    meta = {
        "command": "python bench/plasm_asm.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if args.acquire:
        for name in args.datasets:
            acquire(name, args)
            (args.work / name / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if args.successors_only:  # more seeds' successors on runs phase 1 already wrote
        for name in args.datasets:
            runs = args.work / name / "runs"
            l6 = load_run(runs / "l6")
            successors(name, l6, load_run(runs / "l3"), Plan(**l6.config["plan"]), args)
    if args.analyse:
        analyse(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
