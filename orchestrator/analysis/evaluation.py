"""Evaluation of run directories: plain numbers, no I/O.

Everything here takes a `Run` (see `analysis.runs`) or a learning-curve summary and
returns numbers; `analysis.report` renders them (Markdown/HTML, JSON, PNG).

A *summary* (`Summary`) maps strategy → rows sorted by label count, one row per label count
with `labels`, `seeds` and the mean and (population, ddof=0) std over seeds of `accuracy`
and `macro_f1` (keys `accuracy_mean`, `accuracy_std`, `macro_f1_mean`, `macro_f1_std`).

Metrics (`DEFINITIONS` says the same in one sentence each, for readers of a report):

* AUC: the trapezoidal area under a learning curve divided by its label range, i.e. the
  curve's mean score over the budgets it covers.
* ΔAUC: AUC(strategy) − AUC(random), both taken over the label range the two curves share.
* SSR (sample saving ratio) at budget b: let a be the strategy's score at b; the labels
  random needs to reach a are where random's curve first crosses a (linear interpolation
  between its evaluated budgets); SSR = that label count / b. When random never reaches a,
  SSR is a lower bound (random's largest label count / b) and is shown as "≥ x".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from proxal.orchestrator_service.analysis.runs import RoundRow, Run, SuccessorRow, check_same_pool
from proxal.runtime.errors import InvalidArgumentError
from sklearn.metrics import accuracy_score, f1_score

FORMAT = "proxal-evaluation/1"
BASELINE = "random"
TIMING_FIELDS = ("embed_s", "load_s", "fit_s", "score_s", "finetune_s", "round_s")
METRICS = ("accuracy", "macro_f1")

DEFINITIONS = {
    "auc": "AUC is the area under the learning curve (trapezoidal) divided by its label "
    "range: the curve's mean test score over the budgets it covers.",
    "delta_auc": "ΔAUC is AUC(strategy) − AUC(random), each taken over the label range both "
    "curves cover; above 0 means the strategy beat random on average over those budgets.",
    "ssr": "SSR (sample saving ratio) at budget b is the number of labels random sampling "
    "needs to reach the strategy's accuracy at b (first crossing of random's curve, "
    "interpolated linearly) divided by b; 1.5 means random needs 50% more labels, and "
    "“≥ x” is a lower bound where random never got there within its curve.",
    "timing": "Seconds per round are means over seeds; 'other' is the round's time not "
    "spent embedding, loading, fitting, scoring or fine-tuning.",
}

Summary = dict[str, list[dict[str, float]]]


def test_scores(
    gold: npt.ArrayLike, predicted: npt.ArrayLike, num_classes: int
) -> dict[str, float]:
    """Accuracy and macro-F1 (over all `num_classes` classes, absent ones scoring 0) of
    predicted class ids (n,) against gold (n,)."""
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(
            f1_score(
                gold, predicted, average="macro", labels=np.arange(num_classes), zero_division=0
            )
        ),
    }


def summarise(points: Iterable[RoundRow]) -> Summary:
    """Per strategy, per label count: mean and std over seeds of accuracy and macro-F1.

    → {strategy: [{labels, seeds, accuracy_mean, accuracy_std, macro_f1_mean,
    macro_f1_std}, ...]} with rows sorted by `labels`.
    """
    groups: dict[str, dict[int, list[RoundRow]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        groups[p.strategy][p.labels].append(p)
    out: Summary = {}
    for strategy, by_labels in groups.items():
        rows = []
        for labels in sorted(by_labels):
            acc = np.array([p.accuracy for p in by_labels[labels]], dtype=float)
            f1 = np.array([p.macro_f1 for p in by_labels[labels]], dtype=float)
            rows.append(
                {
                    "labels": labels,
                    "seeds": len(acc),
                    "accuracy_mean": float(acc.mean()),
                    "accuracy_std": float(acc.std()),
                    "macro_f1_mean": float(f1.mean()),
                    "macro_f1_std": float(f1.std()),
                }
            )
        out[strategy] = rows
    return out


def _curve(rows: Sequence[Mapping[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([r["labels"] for r in rows], dtype=float)
    y = np.array([r[key] for r in rows], dtype=float)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def area_under_curve(
    rows: Sequence[Mapping[str, float]],
    key: str = "accuracy_mean",
    lo: float | None = None,
    hi: float | None = None,
) -> float:
    """Trapezoidal area under a curve, normalised by its label range (a mean score).

    `rows`: [{labels, key, ...}] (a summary's rows). `lo`/`hi` restrict the area to that label
    range (inside the curve's; the curve is interpolated linearly at the ends). One point, or
    lo == hi: the score there; no rows: 0.0.
    """
    x, y = _curve(rows, key)
    if len(x) == 0:
        return 0.0
    lo = float(x[0]) if lo is None else float(lo)
    hi = float(x[-1]) if hi is None else float(hi)
    if lo < x[0] or hi > x[-1] or lo > hi:
        raise InvalidArgumentError(
            f"label range {lo:g}..{hi:g} is not inside the curve's {x[0]:g}..{x[-1]:g}"
        )
    if len(x) < 2 or lo == hi:
        return float(np.interp(lo, x, y)) if len(x) > 1 else float(y[0])
    inside = (x > lo) & (x < hi)
    xs = np.concatenate([[lo], x[inside], [hi]])
    ys = np.concatenate([[np.interp(lo, x, y)], y[inside], [np.interp(hi, x, y)]])
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)) / (hi - lo))


def _no_baseline(summary: Mapping[str, object], baseline: str) -> str:
    return (
        f"no {baseline!r} strategy in this run (it has {', '.join(summary) or 'none'}); "
        f"ΔAUC and the sample saving ratio compare against it: run the {baseline!r} "
        "strategy too"
    )


def _require_baseline(summary: Mapping[str, object], baseline: str) -> None:
    if baseline not in summary:
        raise InvalidArgumentError(_no_baseline(summary, baseline))


def delta_auc(
    summary: Mapping[str, Sequence[Mapping[str, float]]],
    baseline: str = BASELINE,
    key: str = "accuracy_mean",
) -> dict[str, float]:
    """AUC(strategy) − AUC(baseline) per strategy, each AUC over the label range both share.

    → {strategy: ΔAUC} (the baseline's own is 0.0; NaN where the ranges do not overlap).
    InvalidArgumentError when the summary has no baseline strategy.
    """
    _require_baseline(summary, baseline)
    base = summary[baseline]
    bx, _ = _curve(base, key)
    out: dict[str, float] = {}
    for strategy, rows in summary.items():
        sx, _ = _curve(rows, key)
        if not len(sx) or not len(bx):
            out[strategy] = math.nan
            continue
        lo, hi = max(sx[0], bx[0]), min(sx[-1], bx[-1])
        if lo > hi:
            out[strategy] = math.nan
            continue
        out[strategy] = area_under_curve(rows, key, lo, hi) - area_under_curve(base, key, lo, hi)
    return out


@dataclass(frozen=True)
class SavingRatio:
    """The sample saving ratio of a strategy against random at one budget.

    `strategy_labels` is the budget b, `strategy_accuracy` the strategy's score a there,
    `random_labels` the labels random needs to reach a (interpolated), `ratio` =
    random_labels / b. `reached` False: random never reached a, so `random_labels` is its
    largest label count and `ratio` a lower bound. `note` explains edge cases ("" if none).
    """

    strategy_labels: int
    strategy_accuracy: float
    random_labels: float
    ratio: float
    reached: bool
    note: str = ""

    def display(self, digits: int = 2) -> str:
        """ "1.50", or "≥ 2.00" for a lower bound, or "–" when undefined."""
        if not math.isfinite(self.ratio):
            return "–"
        return f"{'' if self.reached else '≥ '}{self.ratio:.{digits}f}"


def sample_saving_ratio(
    strategy_rows: Sequence[Mapping[str, float]],
    random_rows: Sequence[Mapping[str, float]],
    budget: int | None = None,
    key: str = "accuracy_mean",
) -> SavingRatio:
    """SSR at `budget` (default: the strategy's last label count); see the module docstring.

    `strategy_rows`/`random_rows`: summary rows ({labels, key, ...}). The strategy's score at
    a budget between its evaluated ones is interpolated linearly.
    """
    sx, sy = _curve(strategy_rows, key)
    if not len(sx):
        raise InvalidArgumentError("the strategy's curve has no points")
    b = int(sx[-1]) if budget is None else int(budget)
    if not sx[0] <= b <= sx[-1]:
        raise InvalidArgumentError(
            f"budget {b} is outside the strategy's label range {sx[0]:g}..{sx[-1]:g}"
        )
    a = float(np.interp(b, sx, sy))
    rx, ry = _curve(random_rows, key)
    keep = np.isfinite(ry)
    rx, ry = rx[keep], ry[keep]
    if not math.isfinite(a) or not len(rx):
        why = "no score at this budget" if not math.isfinite(a) else "random has no scores"
        return SavingRatio(b, a, math.nan, math.nan, False, why)
    hits = np.flatnonzero(ry >= a)
    if not len(hits):
        last = float(rx[-1])
        return SavingRatio(
            b,
            a,
            last,
            last / b,
            False,
            f"random never reaches {a:.4f} within its {last:g} labels: the ratio is a lower bound",
        )
    i = int(hits[0])
    if i == 0:
        first = float(rx[0])
        return SavingRatio(
            b,
            a,
            first,
            first / b,
            True,
            f"random already reaches {a:.4f} at its first point ({first:g} labels): it may "
            "need fewer, so the ratio is an upper bound",
        )
    x0, x1, y0, y1 = float(rx[i - 1]), float(rx[i]), float(ry[i - 1]), float(ry[i])
    needed = x0 + (a - y0) / (y1 - y0) * (x1 - x0)  # y0 < a <= y1
    return SavingRatio(b, a, needed, needed / b, True, "")


def saving_ratios(
    strategy_rows: Sequence[Mapping[str, float]],
    random_rows: Sequence[Mapping[str, float]],
    key: str = "accuracy_mean",
) -> list[SavingRatio]:
    """SSR at every label count of the strategy's curve, in label order."""
    return [
        sample_saving_ratio(strategy_rows, random_rows, int(r["labels"]), key)
        for r in sorted(strategy_rows, key=lambda r: r["labels"])
    ]


def timing_breakdown(run: Run) -> dict[str, list[dict[str, float]]]:
    """Per strategy, per round: mean over seeds of each round's seconds.

    → {strategy: [{round, labels, seeds, embed_s, load_s, fit_s, score_s, finetune_s,
    round_s, other_s}, ...]} sorted by round; `other_s` = round_s − the other parts (≥ 0).
    The run's one-off pool embedding is `run.embed_s`, not in any round.
    """
    groups: dict[str, dict[int, list[RoundRow]]] = defaultdict(lambda: defaultdict(list))
    for r in run.rounds:
        groups[r.strategy][r.round].append(r)
    out: dict[str, list[dict[str, float]]] = {}
    for strategy in _ordered(run, groups):
        rows = []
        for n in sorted(groups[strategy]):
            rs = groups[strategy][n]
            row: dict[str, float] = {
                "round": n,
                "labels": float(np.mean([r.labels for r in rs])),
                "seeds": len(rs),
            }
            for f in TIMING_FIELDS:
                row[f] = float(np.mean([getattr(r, f) for r in rs]))
            parts = sum(row[f] for f in TIMING_FIELDS if f != "round_s")
            row["other_s"] = max(0.0, row["round_s"] - parts)
            rows.append(row)
        out[strategy] = rows
    return out


def timing_totals(
    breakdown: Mapping[str, Sequence[Mapping[str, float]]],
) -> dict[str, dict[str, float]]:
    """Per strategy: the sum over rounds of `timing_breakdown`'s per-round means (a session's
    seconds, mean over seeds) → {strategy: {rounds, embed_s, ..., round_s, other_s}}."""
    out: dict[str, dict[str, float]] = {}
    for strategy, rows in breakdown.items():
        totals: dict[str, float] = {"rounds": len(rows)}
        for f in (*TIMING_FIELDS, "other_s"):
            totals[f] = float(sum(r[f] for r in rows))
        out[strategy] = totals
    return out


def _ordered(run: Run, present: Iterable[str]) -> list[str]:
    """Strategies in the run's session order, then any others in first-seen order."""
    have = list(dict.fromkeys(present))
    order = [s for s in run.strategies() if s in have]
    return order + [s for s in have if s not in order]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.array(values, dtype=float)
    return (float(a.mean()), float(a.std())) if len(a) else (math.nan, math.nan)


def _numeric(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def summarise_successors(rows: Iterable[SuccessorRow]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (strategy, labels, model, method, pseudo-labelled or not,
    PLASM filter).

    → [{strategy, labels, model, method, pseudo_labels, filter, seeds, accuracy_mean, accuracy_std,
    macro_f1_mean, macro_f1_std, train_s_mean, train_s_std, plasm}], in first-seen order;
    `plasm` is {key: mean over the rows that have it} of the numeric values of the rows'
    `plasm` records (e.g. how many pseudo-labels were kept and their accuracy), None when no
    row of the group was pseudo-labelled.
    """
    groups: dict[tuple[str, int, str, str, bool, str | None], list[SuccessorRow]] = defaultdict(
        list
    )
    for r in rows:
        pseudo_filter = None if r.plasm is None else str(r.plasm.get("filter", ""))
        key = (r.strategy, r.labels, r.model, r.method, r.plasm is not None, pseudo_filter)
        groups[key].append(r)
    out: list[dict[str, Any]] = []
    for (strategy, labels, model, method, pseudo, pseudo_filter), rs in groups.items():
        acc = _mean_std([r.accuracy for r in rs])
        f1 = _mean_std([r.macro_f1 for r in rs])
        train = _mean_std([r.train_s for r in rs])
        plasm: dict[str, float] | None = None
        if pseudo:
            values: dict[str, list[float]] = defaultdict(list)
            for r in rs:
                for k, v in (r.plasm or {}).items():
                    if _numeric(v):
                        values[str(k)].append(float(v))
            plasm = {k: float(np.mean(v)) for k, v in values.items()}
        out.append(
            {
                "strategy": strategy,
                "labels": labels,
                "model": model,
                "method": method,
                "pseudo_labels": pseudo,
                "filter": pseudo_filter,
                "seeds": len({r.seed for r in rs}),
                "accuracy_mean": acc[0],
                "accuracy_std": acc[1],
                "macro_f1_mean": f1[0],
                "macro_f1_std": f1[1],
                "train_s_mean": train[0],
                "train_s_std": train[1],
                "plasm": plasm,
            }
        )
    return out


def jsonable(obj: Any) -> Any:
    """NaN/inf → None, tuples → lists, numpy scalars → Python, dataclasses → dicts."""
    if isinstance(obj, SavingRatio):
        return jsonable(asdict(obj))
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def run_metadata(run: Run) -> dict[str, Any]:
    """Who the run is: name, dataset, pool, embedding version, encoder, classes, sessions."""
    strategies = _ordered(run, [*run.strategies(), *(r.strategy for r in run.rounds)])
    return {
        **run.identity(),
        "classes": len(run.classes),
        "sessions": len(run.sessions),
        "strategies": strategies,
        "seeds": {
            s: sorted(set(run.seeds(s)) | {r.seed for r in run.rounds if r.strategy == s})
            for s in strategies
        },
        "rounds": len(run.rounds),
        "embed_s": run.embed_s,
        "directory": None if run.directory is None else str(run.directory),
    }


def _strategy_metrics(summary: Summary, baseline: str, notes: list[str]) -> dict[str, Any]:
    have_base = baseline in summary
    deltas: dict[str, dict[str, float]] = {}
    if have_base:
        deltas = {m: delta_auc(summary, baseline, f"{m}_mean") for m in METRICS}
    else:
        notes.append(f"ΔAUC and SSR omitted: {_no_baseline(summary, baseline)}")
    out: dict[str, Any] = {}
    for strategy, rows in summary.items():
        last = rows[-1]
        ratios = (
            saving_ratios(rows, summary[baseline]) if have_base and strategy != baseline else None
        )
        out[strategy] = {
            "final": {
                k: last[k]
                for k in (
                    "labels",
                    "seeds",
                    "accuracy_mean",
                    "accuracy_std",
                    "macro_f1_mean",
                    "macro_f1_std",
                )
            },
            "auc": {m: area_under_curve(rows, f"{m}_mean") for m in METRICS},
            "delta_auc": {m: deltas[m][strategy] for m in METRICS} if have_base else None,
            "ssr_final": asdict(ratios[-1]) if ratios else None,
            "ssr": [asdict(r) for r in ratios] if ratios else None,
        }
    return out


def evaluate_run(run: Run, baseline: str = BASELINE) -> dict[str, Any]:
    """Every number of a run, JSON-able (NaN → None).

    → {format, run (metadata), baseline (or None), notes, definitions, learning_curves
    (the summary), strategies: {s: {final, auc, delta_auc, ssr_final, ssr}}, timing:
    {one_off_embed_s, per_round, totals}, successors}.
    """
    summary = summarise(run.rounds)
    summary = {s: summary[s] for s in _ordered(run, summary)}
    notes: list[str] = []
    metrics = _strategy_metrics(summary, baseline, notes)
    per_round = timing_breakdown(run)
    return jsonable(
        {
            "format": FORMAT,
            "run": run_metadata(run),
            "baseline": baseline if baseline in summary else None,
            "notes": notes,
            "definitions": DEFINITIONS,
            "learning_curves": summary,
            "strategies": metrics,
            "timing": {
                "one_off_embed_s": run.embed_s,
                "per_round": per_round,
                "totals": timing_totals(per_round),
            },
            "successors": summarise_successors(run.successors),
        }
    )


COMPARED = (
    "final_labels",
    "final_accuracy_mean",
    "final_accuracy_std",
    "final_macro_f1_mean",
    "final_macro_f1_std",
    "auc_accuracy",
    "auc_macro_f1",
    "delta_auc_accuracy",
    "delta_auc_macro_f1",
    "ssr_final",
    "loop_s",
)


def _comparable(evaluation: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    totals = evaluation["timing"]["totals"]
    for strategy, m in evaluation["strategies"].items():
        delta = m["delta_auc"] or {}
        ssr = m["ssr_final"]
        out[strategy] = {
            "final_labels": m["final"]["labels"],
            "final_accuracy_mean": m["final"]["accuracy_mean"],
            "final_accuracy_std": m["final"]["accuracy_std"],
            "final_macro_f1_mean": m["final"]["macro_f1_mean"],
            "final_macro_f1_std": m["final"]["macro_f1_std"],
            "auc_accuracy": m["auc"]["accuracy"],
            "auc_macro_f1": m["auc"]["macro_f1"],
            "delta_auc_accuracy": delta.get("accuracy"),
            "delta_auc_macro_f1": delta.get("macro_f1"),
            "ssr_final": None if ssr is None else ssr["ratio"],
            "ssr_final_reached": None if ssr is None else ssr["reached"],
            "loop_s": totals.get(strategy, {}).get("round_s"),
        }
    return out


def compare_runs(a: Run, b: Run, allow_different_pools: bool = False) -> dict[str, Any]:
    """Side by side numbers of runs `a` and `b`, and B − A for the strategies both ran.

    → {format, a, b (run metadata), same_pool, notes, strategies: {a, b, common},
    per_strategy: {s: {a: {...COMPARED, ssr_final_reached} | None, b: ... | None,
    diff: {COMPARED: B − A} | None}}}; `loop_s` is a session's loop seconds (sum of
    round_s, mean over seeds). Different pools: InvalidArgumentError unless
    `allow_different_pools`; no common strategy: InvalidArgumentError.
    """
    same_pool = a.pool == b.pool and a.pool_fingerprint == b.pool_fingerprint
    if not allow_different_pools:
        check_same_pool(a, b)
    ea, eb = evaluate_run(a), evaluate_run(b)
    sa, sb = list(ea["strategies"]), list(eb["strategies"])
    common = [s for s in sa if s in sb]
    if not common:
        raise InvalidArgumentError(
            f"runs {a.name!r} and {b.name!r} have no strategy in common "
            f"({a.name}: {', '.join(sa)}; {b.name}: {', '.join(sb)}); nothing to compare"
        )
    ca, cb = _comparable(ea), _comparable(eb)
    notes = [f"A: {n}" for n in ea["notes"]] + [f"B: {n}" for n in eb["notes"]]
    if not same_pool:
        notes.insert(
            0,
            f"the runs used different pools ({a.pool!r} vs {b.pool!r}); the numbers are "
            "shown side by side but are not measured on the same data",
        )
    per_strategy: dict[str, Any] = {}
    for s in [*sa, *(s for s in sb if s not in sa)]:
        ra, rb = ca.get(s), cb.get(s)
        diff = None
        if ra is not None and rb is not None:
            diff = {
                k: (rb[k] - ra[k] if ra[k] is not None and rb[k] is not None else None)
                for k in COMPARED
            }
        per_strategy[s] = {"a": ra, "b": rb, "diff": diff}
    return jsonable(
        {
            "format": FORMAT,
            "a": ea["run"],
            "b": eb["run"],
            "same_pool": same_pool,
            "notes": notes,
            "strategies": {"a": sa, "b": sb, "common": common},
            "per_strategy": per_strategy,
        }
    )
