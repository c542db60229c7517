"""Seeded, position-independent ranking: the property sharded selection relies on."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proxal.runtime.deadline import Deadline
from proxal.runtime.errors import DeadlineExceededError
from proxal.runtime.ranking import id_hash, id_uniform, top_k


def test_top_k_is_best_first() -> None:
    scores = np.array([0.1, 0.9, 0.3, 0.7, 0.5], dtype=np.float32)
    ids = np.arange(5, dtype=np.int64)
    assert top_k(scores, ids, 3, 0).tolist() == [1, 3, 4]
    assert sorted(top_k(scores, ids, 5, 0).tolist()) == [0, 1, 2, 3, 4]


def test_ties_are_broken_by_the_seeded_id_hash() -> None:
    scores = np.zeros(100, dtype=np.float32)
    ids = np.arange(100, dtype=np.int64)
    firsts = {int(top_k(scores, ids, 1, seed)[0]) for seed in range(20)}
    assert len(firsts) > 5  # not always the lowest index
    np.testing.assert_array_equal(top_k(scores, ids, 10, 3), top_k(scores, ids, 10, 3))
    order = top_k(scores, ids, 10, 3)
    assert (np.diff(id_hash(ids[order], 3).astype(np.float64)) > 0).all()


def test_nan_scores_rank_last() -> None:
    scores = np.array([np.nan, 0.2, np.nan, 0.1], dtype=np.float32)
    assert top_k(scores, np.arange(4, dtype=np.int64), 2, 0).tolist() == [1, 3]


def test_k_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\]"):
        top_k(np.zeros(2, np.float32), np.arange(2, dtype=np.int64), 3, 0)


def test_id_uniform_is_a_pure_function_of_seed_and_id() -> None:
    ids = np.arange(10_000, dtype=np.int64)
    u = id_uniform(ids, 7)
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    assert abs(float(u.mean()) - 0.5) < 0.02
    np.testing.assert_array_equal(id_uniform(ids[::-1], 7), u[::-1])  # order-free
    assert not np.array_equal(id_uniform(ids, 8), u)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    k=st.integers(1, 40),
    parts=st.integers(1, 6),
    seed=st.integers(0, 2**63),
    levels=st.integers(1, 10),
)
def test_top_k_of_shards_merges_to_top_k_of_the_whole(
    n: int, k: int, parts: int, seed: int, levels: int
) -> None:
    rng = np.random.default_rng(seed % 2**32)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    scores = rng.integers(0, levels, n).astype(np.float32)  # few levels: many ties
    k = min(k, n)
    whole = ids[top_k(scores, ids, k, seed)]
    merged_ids, merged_scores = [], []
    for part in np.array_split(rng.permutation(n), parts):
        if len(part):
            best = top_k(scores[part], ids[part], min(k, len(part)), seed)
            merged_ids.append(ids[part][best])
            merged_scores.append(scores[part][best])
    ids_m, scores_m = np.concatenate(merged_ids), np.concatenate(merged_scores)
    np.testing.assert_array_equal(ids_m[top_k(scores_m, ids_m, k, seed)], whole)


def test_deadline_checks() -> None:
    Deadline().check("anything")  # no deadline: never raises
    Deadline(10.0).check("loading")
    passed = Deadline(0.001)
    time.sleep(0.01)
    assert (passed.remaining() or 0) < 0
    with pytest.raises(DeadlineExceededError, match="after fitting"):
        passed.check("fitting")
