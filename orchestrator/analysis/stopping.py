"""Where each stopping rule would have stopped a simulated session, and what it cost.

A simulation records the stopping signals of every round (`RoundRow.stopping`, see
`engine.stopping`). For each (strategy, seed, rule) the first round whose signal says stop
is where a person following that rule would have stopped labelling: its test accuracy
against the session's best is the accuracy left on the table, and the labels after it are
the labels saved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from proxal.orchestrator_service.analysis.runs import RoundRow
from proxal.orchestrator_service.engine.stopping import NAMES, RULES

MARKERS = {"stabilizing_predictions": "o", "accuracy_change": "s", "uncertain_fraction": "^"}


@dataclass(frozen=True)
class StopPoint:
    """One rule on one session: the first round it says stop (labels -1: it never did)."""

    strategy: str
    seed: int
    rule: str
    labels: int
    accuracy: float  # test accuracy of that round's model (NaN: never stopped)
    best_accuracy: float  # the session's best test accuracy over all its rounds
    final_labels: int

    @property
    def stopped(self) -> bool:
        return self.labels >= 0

    @property
    def left_on_table(self) -> float:
        """Best accuracy minus the accuracy at the stop (NaN: never stopped)."""
        return self.best_accuracy - self.accuracy if self.stopped else math.nan

    @property
    def labels_saved(self) -> int:
        return self.final_labels - self.labels if self.stopped else 0


def stop_points(rounds: Sequence[RoundRow]) -> list[StopPoint]:
    """Every (strategy, seed, rule) with a recorded value in at least one round, in the
    order the sessions appear in `rounds`."""
    sessions: dict[tuple[str, int], list[RoundRow]] = {}
    for r in rounds:
        sessions.setdefault((r.strategy, r.seed), []).append(r)
    out = []
    for (strategy, seed), rows in sessions.items():
        rows = sorted(rows, key=lambda r: r.round)
        best = max(r.accuracy for r in rows)
        for rule in NAMES:
            signals = [r.stopping.get(rule) or {} for r in rows]
            if all(s.get("value") is None for s in signals):
                continue
            first = next((r for r, s in zip(rows, signals, strict=True) if s.get("stop")), None)
            out.append(
                StopPoint(
                    strategy,
                    seed,
                    rule,
                    first.labels if first else -1,
                    first.accuracy if first else math.nan,
                    best,
                    rows[-1].labels,
                )
            )
    return out


def stopping_markdown(points: Sequence[StopPoint]) -> str:
    """A Markdown table: for each session and rule, where it stops and what it leaves."""
    lines = [
        "| strategy | seed | rule | stops at (labels) | accuracy there | best accuracy "
        "| left on the table | labels saved |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        where = f"{p.labels:,}" if p.stopped else f"never (≤ {p.final_labels:,})"
        acc = f"{p.accuracy:.4f}" if p.stopped else "–"
        left = f"{p.left_on_table:.4f}" if p.stopped else "–"
        lines.append(
            f"| {p.strategy} | {p.seed} | {p.rule} | {where} | {acc} | {p.best_accuracy:.4f} "
            f"| {left} | {p.labels_saved:,} |"
        )
    return "\n".join(lines)


def stopping_summary(points: Sequence[StopPoint]) -> list[str]:
    """One line per (strategy, rule): mean stop, accuracy left and labels saved over seeds."""
    groups: dict[tuple[str, str], list[StopPoint]] = {}
    for p in points:
        groups.setdefault((p.strategy, p.rule), []).append(p)
    lines = []
    for (strategy, rule), group in groups.items():
        stopped = [p for p in group if p.stopped]
        if not stopped:
            lines.append(f"{strategy:<18} {rule:<24} never said stop ({len(group)} seed(s))")
            continue
        lines.append(
            f"{strategy:<18} {rule:<24} stops at {np.mean([p.labels for p in stopped]):>7,.0f} "
            f"labels, leaves {np.mean([p.left_on_table for p in stopped]):.4f} accuracy on the "
            f"table, saves {np.mean([p.labels_saved for p in stopped]):,.0f} labels "
            f"({len(stopped)}/{len(group)} seed(s) stopped)"
        )
    return lines


def plot_stopping(rounds: Sequence[RoundRow], points: Sequence[StopPoint], path: Path) -> None:
    """A PNG. Top row, one panel per strategy: each seed's test-accuracy curve and, on it,
    where each rule first says stop. Bottom row, one panel per rule: its value over labels
    (mean over the seeds that have one) per strategy, against its threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(p.strategy for p in points))
    cols = max(len(strategies), len(NAMES))
    fig, axes = plt.subplots(2, cols, figsize=(4.5 * cols, 7.5), squeeze=False)
    for ax, strategy in zip(axes[0], strategies, strict=False):
        _stops_panel(ax, rounds, points, strategy)
    for ax, rule in zip(axes[1], NAMES, strict=False):
        _values_panel(ax, rounds, strategies, rule)
    for ax in [*axes[0][len(strategies) :], *axes[1][len(NAMES) :]]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Where each stopping rule first says stop (top) and its value (bottom)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _session(rounds: Sequence[RoundRow], strategy: str, seed: int) -> list[RoundRow]:
    return sorted(
        (r for r in rounds if r.strategy == strategy and r.seed == seed), key=lambda r: r.round
    )


def _stops_panel(
    ax: Any, rounds: Sequence[RoundRow], points: Sequence[StopPoint], strategy: str
) -> None:
    seeds = sorted({p.seed for p in points if p.strategy == strategy})
    for seed in seeds:
        rows = _session(rounds, strategy, seed)
        ax.plot([r.labels for r in rows], [r.accuracy for r in rows], color="0.6", lw=1)
    for n, rule in enumerate(NAMES):
        hits = [p for p in points if p.strategy == strategy and p.rule == rule and p.stopped]
        ax.scatter(
            [p.labels for p in hits],
            [p.accuracy for p in hits],
            marker=MARKERS[rule],
            s=60,
            color=f"C{n}",
            label=rule,
            zorder=3,
        )
    ax.set_title(f"{strategy} ({len(seeds)} seed(s); grey: each seed)")
    ax.set_xlabel("labeled examples")
    ax.grid(alpha=0.3)


def _values_panel(
    ax: Any, rounds: Sequence[RoundRow], strategies: Sequence[str], rule: str
) -> None:
    for k, strategy in enumerate(strategies):
        values: dict[int, list[float]] = {}
        for r in rounds:
            value = (r.stopping.get(rule) or {}).get("value")
            if r.strategy == strategy and value is not None:
                values.setdefault(r.labels, []).append(float(value))
        if values:
            x = sorted(values)
            ax.plot(x, [np.mean(values[i]) for i in x], marker=".", color=f"C{k}", label=strategy)
    ax.axhline(RULES[rule][1], color="black", ls="--", lw=1, label="threshold")
    ax.set_title(rule)
    ax.set_xlabel("labeled examples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
