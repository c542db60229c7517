"""Uncertainty scores from class probabilities: higher = more informative.

Pure numpy, shared by the proxy's strategies and the orchestrator's fine-tuned AL loop, so
both rank a pool the same way given the same probabilities. Every function takes
probabilities (n, C) (rows summing to 1) and returns one float32 score per row (n,).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Proba = npt.NDArray[np.floating]
Scores = npt.NDArray[np.float32]

_TINY = np.finfo(np.float32).tiny

UNCERTAINTY_SCORES = ("least_confidence", "margin", "entropy")


def least_confidence(proba: Proba) -> Scores:
    """1 - max_c p(c | x): (n, C) -> (n,) float32; the least confident predictions score highest."""
    return (1.0 - proba.max(axis=1)).astype(np.float32)


def margin(proba: Proba) -> Scores:
    """-(p1 - p2), minus the gap between the two most probable classes: (n, C) -> (n,) float32.

    Scores are <= 0; the smallest gaps score highest (0 for a tie between the top two).
    Needs C >= 2.
    """
    top2 = np.partition(proba, proba.shape[1] - 2, axis=1)[:, -2:]
    return (top2[:, 0] - top2[:, 1]).astype(np.float32)


def entropy(proba: Proba) -> Scores:
    """-sum_c p log p over the last axis: (..., C) -> (...) float32 (so (n, C) -> (n,)).

    Zero probabilities contribute 0 (log is taken of max(p, float32 tiny)); the uniform
    distribution scores highest, log C.
    """
    return (-(proba * np.log(np.maximum(proba, _TINY))).sum(axis=-1)).astype(np.float32)


def uncertainty(name: str, proba: Proba) -> Scores:
    """The score called `name` (one of UNCERTAINTY_SCORES) of proba (n, C) -> (n,) float32.

    ValueError for an unknown name.
    """
    if name == "least_confidence":
        return least_confidence(proba)
    if name == "margin":
        return margin(proba)
    if name == "entropy":
        return entropy(proba)
    raise ValueError(f"unknown uncertainty score {name!r}; valid: {', '.join(UNCERTAINTY_SCORES)}")
