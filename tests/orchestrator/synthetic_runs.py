"""Synthetic run directories for the evaluation and report tests: hand-computable curves,
timings and successors built from `analysis.runs` dataclasses (no services needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxal.orchestrator_service.analysis.runs import RoundRow, Run, SessionInfo, SuccessorRow

# The curves the tests compute by hand: labels → mean accuracy.
RANDOM = [(100, 0.5), (200, 0.7), (300, 0.8)]
MARGIN = [(100, 0.6), (200, 0.8), (300, 0.85)]


def make_run(
    curves: Mapping[str, Sequence[tuple[int, float]]] | None = None,
    seeds: Sequence[int] = (0, 1),
    spread: float = 0.01,
    name: str = "synthetic",
    pool: str = "pool",
    fingerprint: str = "fp-1",
    successors: Sequence[SuccessorRow] = (),
) -> Run:
    """A run whose seed s scores curve ± spread (so the mean is the curve, std = spread for
    two seeds); macro-F1 = accuracy − 0.1; seed s spends s+1 s fitting, 2 s scoring."""
    curves = {"random": RANDOM, "margin": MARGIN} if curves is None else curves
    sessions, rounds = [], []
    for strategy, points in curves.items():
        for k, seed in enumerate(seeds):
            sign = 1 if k % 2 else -1
            sessions.append(SessionInfo(strategy, seed, f"{strategy}-{seed}", (1, 2, 3)))
            for i, (labels, acc) in enumerate(points):
                last = i == len(points) - 1
                rounds.append(
                    RoundRow(
                        strategy=strategy,
                        seed=seed,
                        round=i,
                        labels=labels,
                        accuracy=acc + sign * spread,
                        macro_f1=acc - 0.1 + sign * spread,
                        selected_ids=() if last else (1000 * (i + 1) + seed,),
                        embed_s=0.5 if i == 1 else 0.0,
                        load_s=0.25,
                        fit_s=1.0 + seed,
                        score_s=2.0,
                        finetune_s=0.0,
                        round_s=4.0 + seed,
                    )
                )
    return Run(
        name=name,
        pool=pool,
        pool_fingerprint=fingerprint,
        store="/nowhere",
        embedding_version="v1",
        classes=["a", "b", "c"],
        sessions=sessions,
        rounds=rounds,
        encoder={"model": "minilm-l6", "backend": "onnx"},
        dataset="synthetic",
        embed_s=12.5,
        successors=list(successors),
    )


def successor_rows() -> list[SuccessorRow]:
    plain = [
        SuccessorRow("margin", seed, 300, "minilm-l6", "full", acc, acc - 0.1, 30.0 + seed)
        for seed, acc in ((0, 0.80), (1, 0.84))
    ]
    plasm = [
        SuccessorRow(
            "margin",
            seed,
            300,
            "minilm-l6",
            "full",
            0.86,
            0.8,
            50.0,
            {"kept": kept, "pseudo_label_accuracy": pacc, "threshold_rule": "auto", "ok": True},
        )
        for seed, kept, pacc in ((0, 40, 0.9), (1, 60, 0.8))
    ]
    return plain + plasm
