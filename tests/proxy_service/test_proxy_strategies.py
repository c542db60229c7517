"""Query strategies on hand-made probability rows, and top-k selection with tie breaking."""

from __future__ import annotations

import numpy as np
import pytest

from proxal_runtime.errors import InvalidArgumentError
from proxy_service.strategies import STRATEGIES, get_strategy, select_top_k

ROWS = np.array(
    [
        [0.90, 0.05, 0.05, 0.00],  # confident
        [0.50, 0.49, 0.01, 0.00],  # torn between two classes
        [0.25, 0.25, 0.25, 0.25],  # uniform
        [1.00, 0.00, 0.00, 0.00],  # certain (zero columns must not produce NaN)
    ],
    dtype=np.float32,
)


def score(name: str, proba: np.ndarray = ROWS, seed: int = 0) -> np.ndarray:
    scores = get_strategy(name).score(proba, len(proba), np.random.default_rng(seed))
    assert scores.dtype == np.float32 and scores.shape == (len(proba),)
    assert np.isfinite(scores).all()
    return scores


def test_registry_names_and_model_needs() -> None:
    assert list(STRATEGIES) == ["random", "least_confidence", "margin", "entropy"]
    assert not get_strategy("random").needs_model
    assert all(get_strategy(n).needs_model for n in ("least_confidence", "margin", "entropy"))


def test_unknown_strategy_lists_valid_names() -> None:
    with pytest.raises(InvalidArgumentError, match="least_confidence, margin, entropy"):
        get_strategy("bald")


def test_least_confidence_is_one_minus_max() -> None:
    np.testing.assert_allclose(score("least_confidence"), [0.10, 0.50, 0.75, 0.0], atol=1e-6)


def test_margin_is_negative_top_two_gap() -> None:
    scores = score("margin")
    np.testing.assert_allclose(scores, [-0.85, -0.01, 0.0, -1.0], atol=1e-6)
    assert scores[1] > scores[0]  # [0.5, 0.49, ...] is more informative than [0.9, 0.05, ...]


def test_margin_with_two_classes() -> None:
    proba = np.array([[0.7, 0.3], [0.45, 0.55]], dtype=np.float32)
    np.testing.assert_allclose(score("margin", proba), [-0.4, -0.1], atol=1e-6)


def test_entropy_is_highest_for_uniform_and_zero_for_certain() -> None:
    scores = score("entropy")
    assert scores[2] == pytest.approx(np.log(4), abs=1e-6)
    assert scores[3] == pytest.approx(0.0, abs=1e-6)
    assert scores[2] > scores[1] > scores[0] > scores[3]


def test_random_is_uniform_and_seeded() -> None:
    strategy = get_strategy("random")
    a = strategy.score(None, 1000, np.random.default_rng(7))
    b = strategy.score(None, 1000, np.random.default_rng(7))
    c = strategy.score(None, 1000, np.random.default_rng(8))
    assert a.dtype == np.float32 and a.shape == (1000,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() < 1.0 and 0.4 < a.mean() < 0.6


def test_model_strategies_need_probabilities() -> None:
    with pytest.raises(ValueError, match="needs class probabilities"):
        get_strategy("margin").score(None, 3, np.random.default_rng(0))


def test_top_k_is_best_first() -> None:
    scores = np.array([0.1, 0.9, 0.3, 0.7, 0.5], dtype=np.float32)
    top = select_top_k(scores, 3, np.random.default_rng(0))
    assert top.tolist() == [1, 3, 4]
    assert sorted(select_top_k(scores, 5, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3, 4]


def test_top_k_breaks_ties_randomly_but_deterministically() -> None:
    scores = np.zeros(100, dtype=np.float32)
    firsts = {int(select_top_k(scores, 1, np.random.default_rng(seed))[0]) for seed in range(20)}
    assert len(firsts) > 5  # not always the lowest index
    a = select_top_k(scores, 10, np.random.default_rng(3))
    b = select_top_k(scores, 10, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10


def test_top_k_ties_below_distinct_scores() -> None:
    scores = np.array([0.5, 0.5, 0.9, 0.5, 0.1], dtype=np.float32)
    for seed in range(10):
        top = select_top_k(scores, 2, np.random.default_rng(seed))
        assert top[0] == 2 and top[1] in (0, 1, 3)
