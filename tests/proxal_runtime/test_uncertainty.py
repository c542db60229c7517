"""proxal.runtime.uncertainty and proxal.runtime.subsampling: shared, pure scoring code."""

from __future__ import annotations

import numpy as np
import pytest
from proxal.runtime import uncertainty
from proxal.runtime.subsampling import sort_by_id, ups_keep

ROWS = np.array(
    [[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]], dtype=np.float32
)


def test_least_confidence_is_one_minus_max() -> None:
    scores = uncertainty.least_confidence(ROWS)
    assert scores.dtype == np.float32 and scores.shape == (4,)
    np.testing.assert_allclose(scores, [0.1, 0.5, 0.5, 0.0], atol=1e-6)


def test_margin_is_minus_the_top_two_gap() -> None:
    scores = uncertainty.margin(ROWS)
    assert scores.dtype == np.float32 and scores.shape == (4,)
    np.testing.assert_allclose(scores, [-0.85, -0.2, -0.25, -1.0], atol=1e-6)
    tied = np.array([[0.4, 0.4, 0.2]], dtype=np.float32)
    assert uncertainty.margin(tied)[0] == 0.0  # a tie at the top is the most informative


def test_entropy_orders_uniform_first_and_certain_last() -> None:
    scores = uncertainty.entropy(ROWS)
    assert scores.dtype == np.float32 and scores.shape == (4,)
    assert scores[3] == 0.0  # zeros contribute nothing, no NaN from log(0)
    uniform = uncertainty.entropy(np.full((1, 3), 1 / 3, dtype=np.float32))
    np.testing.assert_allclose(uniform, [np.log(3)], rtol=1e-6)
    assert uniform[0] > scores.max()
    stacked = uncertainty.entropy(np.stack([ROWS, ROWS]))  # (T, n, C) -> (T, n)
    assert stacked.shape == (2, 4)


def test_uncertainty_dispatches_by_name_and_rejects_unknown() -> None:
    for name in uncertainty.UNCERTAINTY_SCORES:
        np.testing.assert_array_equal(
            uncertainty.uncertainty(name, ROWS), getattr(uncertainty, name)(ROWS)
        )
    with pytest.raises(ValueError, match="valid: least_confidence, margin, entropy"):
        uncertainty.uncertainty("bald", ROWS)


def test_ups_keep_keeps_the_top_gamma_and_unknown_ids() -> None:
    ids = np.arange(1000, dtype=np.int64)
    scores = np.linspace(1.0, 0.0, 1000).astype(np.float32)  # id 0 scores highest
    prev_ids, prev_scores = sort_by_id(ids[::-1].copy(), scores[::-1].copy())
    np.testing.assert_array_equal(prev_ids, ids)
    candidates = np.arange(1100, dtype=np.int64)  # 100 ids without a previous score
    keep = ups_keep(candidates, prev_ids, prev_scores, gamma=0.1, temperature=0.01, seed=3)
    assert keep[:100].all()  # the top 10% by previous score
    assert keep[1000:].all()  # never scored: always kept
    assert keep[:1000].sum() < 300  # most of the low-ranked tail is skipped
    again = ups_keep(candidates, prev_ids, prev_scores, gamma=0.1, temperature=0.01, seed=3)
    np.testing.assert_array_equal(keep, again)


def test_ups_keep_with_no_previous_scores_keeps_everything() -> None:
    empty_ids, empty_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
    keep = ups_keep(np.arange(5, dtype=np.int64), empty_ids, empty_scores, 0.1, 0.01, 0)
    assert keep.all()


@pytest.mark.parametrize("temperature", [1e308, np.finfo(np.float64).max])
def test_ups_keep_with_a_huge_temperature_keeps_everything(temperature: float) -> None:
    """gamma + 17 T overflows to inf: every rank is within the horizon, all are kept."""
    ids = np.arange(50, dtype=np.int64)
    scores = np.linspace(1.0, 0.0, 50).astype(np.float32)
    assert ups_keep(ids, ids, scores, 0.1, temperature, 0).all()
    empty_ids, empty_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
    assert ups_keep(ids, empty_ids, empty_scores, 0.1, temperature, 0).all()
