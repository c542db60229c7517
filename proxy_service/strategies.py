"""Query strategies: turn class probabilities into informativeness scores (higher = better)."""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from proxal_runtime.errors import InvalidArgumentError

Proba = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float32]


class Strategy(Protocol):
    """Scores m candidates; `proba` is (m, C) when `needs_model`, else None."""

    name: ClassVar[str]
    needs_model: ClassVar[bool]

    def score(self, proba: Proba | None, n: int, rng: np.random.Generator) -> Scores:
        """(m, C) probabilities (or None) for n = m candidates -> scores (n,) float32."""
        ...


def _require(proba: Proba | None, name: str) -> Proba:
    if proba is None:
        raise ValueError(f"strategy {name!r} needs class probabilities")
    return proba


class RandomStrategy:
    """Uniform random scores from the seeded rng: a random sample of candidates."""

    name: ClassVar[str] = "random"
    needs_model: ClassVar[bool] = False

    def score(self, proba: Proba | None, n: int, rng: np.random.Generator) -> Scores:
        return rng.random(n, dtype=np.float32)


class LeastConfidence:
    """1 - max_c p(c | x): the model's least confident predictions first."""

    name: ClassVar[str] = "least_confidence"
    needs_model: ClassVar[bool] = True

    def score(self, proba: Proba | None, n: int, rng: np.random.Generator) -> Scores:
        p = _require(proba, self.name)
        return (1.0 - p.max(axis=1)).astype(np.float32)


class Margin:
    """-(p1 - p2), the gap between the two most probable classes: smallest gaps first."""

    name: ClassVar[str] = "margin"
    needs_model: ClassVar[bool] = True

    def score(self, proba: Proba | None, n: int, rng: np.random.Generator) -> Scores:
        p = _require(proba, self.name)
        top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
        return (top2[:, 0] - top2[:, 1]).astype(np.float32)


class Entropy:
    """-sum_c p log p: the most uncertain class distributions first."""

    name: ClassVar[str] = "entropy"
    needs_model: ClassVar[bool] = True

    def score(self, proba: Proba | None, n: int, rng: np.random.Generator) -> Scores:
        p = _require(proba, self.name)
        logp = np.log(np.maximum(p, np.finfo(np.float32).tiny))
        return (-(p * logp).sum(axis=1)).astype(np.float32)


STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (RandomStrategy(), LeastConfidence(), Margin(), Entropy())
}


def get_strategy(name: str) -> Strategy:
    """The strategy called `name`; raises InvalidArgumentError listing the valid names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}"
        ) from None


def select_top_k(scores: Scores, k: int, rng: np.random.Generator) -> npt.NDArray[np.intp]:
    """Indices of the k highest scores (n,), best first, 1 <= k <= n.

    Ties are broken by a random permutation from `rng`, so among equal scores the lowest
    index is not always preferred; the result is deterministic given the rng's state.
    """
    perm = rng.permutation(len(scores))
    shuffled = scores[perm]
    top = np.argpartition(-shuffled, k - 1)[:k]
    top = top[np.lexsort((top, -shuffled[top]))]
    return perm[top]
