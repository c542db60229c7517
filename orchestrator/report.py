"""Learning-curve summaries: a text table, a JSON report and a PNG plot."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.asvp import AlignmentDecision
from orchestrator.runs import RoundRow


def summarise(points: list[RoundRow]) -> dict[str, list[dict[str, float]]]:
    """Per strategy, per label count: mean and std over seeds of accuracy and macro-F1."""
    groups: dict[str, dict[int, list[RoundRow]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        groups[p.strategy][p.labels].append(p)
    out: dict[str, list[dict[str, float]]] = {}
    for strategy, by_labels in groups.items():
        rows = []
        for labels in sorted(by_labels):
            acc = np.array([p.accuracy for p in by_labels[labels]])
            f1 = np.array([p.macro_f1 for p in by_labels[labels]])
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


def area_under_curve(rows: list[dict[str, float]], key: str = "accuracy_mean") -> float:
    """Trapezoidal area under a curve, normalised by its label range (a mean accuracy)."""
    x = np.array([r["labels"] for r in rows], dtype=float)
    y = np.array([r[key] for r in rows], dtype=float)
    if len(x) < 2:
        return float(y[0]) if len(y) else 0.0
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def curve_table(summary: dict[str, list[dict[str, float]]]) -> str:
    """A fixed-width table: one row per label count, one column per strategy (acc ± std)."""
    strategies = list(summary)
    labels = sorted({r["labels"] for rows in summary.values() for r in rows})
    cell = {(s, r["labels"]): r for s in strategies for r in summary[s]}
    width = max(16, *(len(s) + 2 for s in strategies))
    lines = [
        "test accuracy (mean ± std over seeds)",
        "labels".rjust(7) + "".join(s.rjust(width) for s in strategies),
    ]
    for n in labels:
        parts = []
        for s in strategies:
            r = cell.get((s, n))
            parts.append(
                (f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}" if r else "-").rjust(width)
            )
        lines.append(str(int(n)).rjust(7) + "".join(parts))
    lines.append(
        "AUC".rjust(7)
        + "".join(f"{area_under_curve(summary[s]):.4f}".rjust(width) for s in strategies)
    )
    return "\n".join(lines)


def alignment_table(decisions: dict[tuple[str, int], list[AlignmentDecision]]) -> str:
    """One line per ASVP check: scores, gap vs threshold, action, B1/B2 and seconds spent."""
    lines = [
        "ASVP checks (LogME{} of current vs fine-tuned features on the labeled set)".format(
            "-PED" if any(d.use_ped for ds in decisions.values() for d in ds) else ""
        ),
        f"{'session':>20} {'round':>5} {'labels':>6} {'current':>8} {'tuned':>8} {'gap':>7} "
        f"{'thresh':>6} {'action':>7} {'B1':>4} {'B2':>4} {'succ.':>6} {'ft s':>6} {'ref s':>6}",
    ]
    for (strategy, seed), rows in decisions.items():
        for d in rows:
            lines.append(
                f"{f'{strategy}/s{seed}':>20} {d.round:>5} {d.labels:>6} "
                f"{d.logme_current:>8.4f} {d.logme_finetuned:>8.4f} {d.gap:>7.4f} "
                f"{d.threshold:>6.3f} {d.action:>7} {d.b1_proxy_right_finetuned_wrong:>4} "
                f"{d.b2_finetuned_right_proxy_wrong:>4} {d.successor_method:>6} "
                f"{d.finetune_s:>6.1f} {d.refresh_s:>6.1f}"
            )
    return "\n".join(lines)


def plot_curves(summary: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    """Accuracy and macro-F1 learning curves with ±1 std bands, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric, label in (
        (axes[0], "accuracy", "test accuracy"),
        (axes[1], "macro_f1", "test macro-F1"),
    ):
        for strategy, rows in summary.items():
            x = np.array([r["labels"] for r in rows])
            m = np.array([r[f"{metric}_mean"] for r in rows])
            s = np.array([r[f"{metric}_std"] for r in rows])
            ax.plot(x, m, marker="o", markersize=3, label=strategy)
            ax.fill_between(x, m - s, m + s, alpha=0.15)
        ax.set_xlabel("labeled examples")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(report: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
