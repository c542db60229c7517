"""Query strategies: one contract suite run for every strategy, then each one's own rule."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from proxal.proxy_service import strategies
from proxal.proxy_service.classifiers import ClassifierSpec, build_classifier
from proxal.proxy_service.strategies import (
    STRATEGIES,
    Entropy,
    LeastConfidence,
    Margin,
    Pool,
    fallback_for,
    get_strategy,
)
from proxal.runtime import strategies as contract
from proxal.runtime.deadline import Deadline
from proxal.runtime.errors import DeadlineExceededError, InvalidArgumentError
from sklearn.cluster import kmeans_plusplus

N, DIM, CLASSES = 600, 16, 4
RNG = np.random.default_rng(0)
CENTERS = RNG.normal(0.0, 1.5, size=(CLASSES, DIM))
TRUTH = RNG.integers(0, CLASSES, size=N).astype(np.int32)
VECTORS = (CENTERS[TRUTH] + RNG.normal(size=(N, DIM))).astype(np.float32)
IDS = np.arange(5000, 5000 + N, dtype=np.int64)
TRAIN = np.arange(40)  # rows 0..39 are labeled
KIND_FOR = {"bald": "mlp"}


def make_pool(
    name: str,
    rows: np.ndarray | None = None,
    seed: int = 0,
    train: np.ndarray = TRAIN,
    threads: int = 1,
) -> Pool:
    """A pool over VECTORS with the rows not in `train` as candidates (or `rows`)."""
    strategy = get_strategy(name)
    if rows is None:
        rows = np.setdiff1d(np.arange(N), train)
    model = None
    if strategy.needs_model:
        spec = ClassifierSpec(kind=KIND_FOR.get(name, "logreg"), max_iter=40)
        model = build_classifier(spec, seed=1).fit(VECTORS[train], TRUTH[train], CLASSES)
    return Pool(
        vectors=VECTORS,
        rows=rows,
        ids=IDS[rows],
        train_rows=train,
        labels=TRUTH[train],
        num_classes=CLASSES,
        model=model,
        seed=seed,
        mc_samples=8,
        threads=threads,
    )


# ---------------------------------------------------------------- the shared contract


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.parametrize("k", [1, 7, 30])
def test_contract_k_distinct_candidates_best_first(name: str, k: int) -> None:
    pool = make_pool(name)
    picked = STRATEGIES[name].select(pool, k)
    assert picked.positions.shape == (k,) and picked.scores.shape == (k,)
    assert picked.scores.dtype == np.float32
    assert len(set(picked.positions.tolist())) == k  # never an id twice
    assert picked.positions.min() >= 0 and picked.positions.max() < len(pool.rows)
    chosen_rows = pool.rows[picked.positions]
    assert not set(chosen_rows.tolist()) & set(TRAIN.tolist())  # never a labeled id
    assert not np.isnan(picked.scores).any()
    if STRATEGIES[name].decomposable:
        assert (np.diff(picked.scores) <= 0).all()  # best first
        assert picked.all_scores is not None and picked.all_scores.shape == (len(pool.rows),)
        np.testing.assert_array_equal(picked.all_scores[picked.positions], picked.scores)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_contract_deterministic_given_the_seed(name: str) -> None:
    a = STRATEGIES[name].select(make_pool(name, seed=3), 12)
    b = STRATEGIES[name].select(make_pool(name, seed=3), 12)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_contract_all_candidates_when_k_is_m(name: str) -> None:
    rows = np.arange(100, 125)
    picked = STRATEGIES[name].select(make_pool(name, rows=rows), len(rows))
    assert sorted(picked.positions.tolist()) == list(range(len(rows)))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_contract_threads_do_not_change_the_answer(name: str) -> None:
    rows = np.setdiff1d(np.arange(N), TRAIN)
    old = strategies.CHUNK_ROWS
    strategies.CHUNK_ROWS = 64  # many chunks, some sliced and some gathered
    try:
        one = STRATEGIES[name].select(make_pool(name, rows=rows[::2], threads=1), 10)
        two = STRATEGIES[name].select(make_pool(name, rows=rows[::2], threads=2), 10)
    finally:
        strategies.CHUNK_ROWS = old
    np.testing.assert_array_equal(one.positions, two.positions)
    np.testing.assert_array_equal(one.scores, two.scores)  # picked: scored one row at a time


@pytest.mark.parametrize("name", [n for n, s in STRATEGIES.items() if s.decomposable])
def test_contract_decomposable_strategies_merge_across_shards(name: str) -> None:
    """Top k of the pool == top k of the union of each half's top k (same scores per row)."""
    rows = np.setdiff1d(np.arange(N), TRAIN)
    whole = STRATEGIES[name].select(make_pool(name, rows=rows), 15)
    halves = [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
    merged_ids, merged_scores = [], []
    for half in halves:
        picked = STRATEGIES[name].select(make_pool(name, rows=half), 15)
        merged_ids.append(IDS[half][picked.positions])
        merged_scores.append(picked.scores)
    ids = np.concatenate(merged_ids)
    scores = np.concatenate(merged_scores)
    from proxal.runtime.ranking import top_k

    best = top_k(scores, ids, 15, 0)
    np.testing.assert_array_equal(ids[best], IDS[rows][whole.positions])


# 100 distinct vectors, each at 6 scattered rows: like duplicate texts in a real pool.
DUPLICATED = VECTORS[RNG.permutation(np.repeat(np.arange(100, 200), 6))]


def _duplicates_pool(name: str, rows: np.ndarray, threads: int = 1) -> Pool:
    """make_pool's pool (and model) over the DUPLICATED vectors."""
    return replace(make_pool(name, rows=rows, threads=threads), vectors=DUPLICATED)


@pytest.mark.parametrize(
    "name", [n for n, s in STRATEGIES.items() if s.decomposable and n != "random"]
)
def test_contract_picks_are_bit_identical_for_any_chunking(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identical vectors must score identically wherever they sit, so equal scores fall to
    the id hash: the same ids, order and scores from the whole pool, from small chunks on
    two threads and from merged shards (BLAS rounds a row by its place in a chunk; the
    top candidates are scored again one row at a time)."""
    from proxal.runtime.ranking import top_k

    rows = np.setdiff1d(np.arange(N), TRAIN)
    whole = STRATEGIES[name].select(_duplicates_pool(name, rows), 15)
    want_ids = IDS[rows][whole.positions]
    monkeypatch.setattr(strategies, "CHUNK_ROWS", 7)
    chunked = STRATEGIES[name].select(_duplicates_pool(name, rows, threads=2), 15)
    np.testing.assert_array_equal(IDS[rows][chunked.positions], want_ids)
    np.testing.assert_array_equal(chunked.scores, whole.scores)
    thirds = [rows[start::3] for start in range(3)]
    parts = [STRATEGIES[name].select(_duplicates_pool(name, part), 15) for part in thirds]
    ids = np.concatenate([IDS[part][p.positions] for part, p in zip(thirds, parts, strict=True)])
    scores = np.concatenate([p.scores for p in parts])
    best = top_k(scores, ids, 15, 0)
    np.testing.assert_array_equal(ids[best], want_ids)
    np.testing.assert_array_equal(scores[best], whole.scores)


def test_settling_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over MAX_SETTLE_ROWS candidates near the k-th score: no one-row pass (it would take
    ~15 us a row); the chunked scores decide."""
    pool = make_pool("margin")
    near_all = np.zeros(len(pool.rows), dtype=np.float32)  # a flat model: every score ties
    settled = Margin().settle(pool, near_all, 5)
    assert settled is not near_all  # the one-row pass ran
    monkeypatch.setattr(strategies, "MAX_SETTLE_ROWS", len(pool.rows) - 1)
    assert Margin().settle(pool, near_all, 5) is near_all


def test_registry_and_flags() -> None:
    assert tuple(STRATEGIES) == contract.STRATEGIES  # the names clients check against
    assert {n for n, s in STRATEGIES.items() if not s.decomposable} == {"coreset", "badge"}
    assert {n for n, s in STRATEGIES.items() if not s.needs_model} == {
        "random",
        "mahalanobis",
        "coreset",
    }
    assert get_strategy("").name == "margin"  # the default, as in SelectRequest.strategy


def test_unknown_strategy_lists_valid_names() -> None:
    with pytest.raises(InvalidArgumentError, match="least_confidence, margin, entropy, bald"):
        get_strategy("bayes")


def test_cold_start_fallbacks_say_why() -> None:
    no_labels = np.zeros(0, np.int32)
    for name in ("least_confidence", "bald", "badge"):
        assert "no labels yet" in STRATEGIES[name].unusable_reason(no_labels)
    assert "all labels are class 2" in STRATEGIES["margin"].unusable_reason(np.array([2, 2]))
    assert "at least 2 labels" in STRATEGIES["mahalanobis"].unusable_reason(np.array([1]))
    assert STRATEGIES["mahalanobis"].unusable_reason(np.array([1, 1])) == ""
    assert STRATEGIES["coreset"].unusable_reason(no_labels) == ""
    assert fallback_for(STRATEGIES["badge"]).name == "coreset"  # diversity for diversity
    assert fallback_for(STRATEGIES["margin"]).name == "random"


def test_bald_needs_the_mlp_and_a_sane_sample_count() -> None:
    with pytest.raises(InvalidArgumentError, match=r"classifier\.kind to 'mlp'"):
        STRATEGIES["bald"].check("logreg", 20)
    with pytest.raises(InvalidArgumentError, match="mc_samples"):
        STRATEGIES["bald"].check("mlp", 5000)
    STRATEGIES["bald"].check("mlp", 20)


# ---------------------------------------------------------------- each strategy's rule

ROWS = np.array(
    [
        [0.90, 0.05, 0.05, 0.00],  # confident
        [0.50, 0.49, 0.01, 0.00],  # torn between two classes
        [0.25, 0.25, 0.25, 0.25],  # uniform
        [1.00, 0.00, 0.00, 0.00],  # certain (zero columns must not produce NaN)
    ],
    dtype=np.float32,
)


def test_least_confidence_is_one_minus_max() -> None:
    np.testing.assert_allclose(LeastConfidence().from_proba(ROWS), [0.1, 0.5, 0.75, 0], atol=1e-6)


def test_margin_is_negative_top_two_gap() -> None:
    scores = Margin().from_proba(ROWS)
    np.testing.assert_allclose(scores, [-0.85, -0.01, 0.0, -1.0], atol=1e-6)
    two = np.array([[0.7, 0.3], [0.45, 0.55]], dtype=np.float32)
    np.testing.assert_allclose(Margin().from_proba(two), [-0.4, -0.1], atol=1e-6)


def test_entropy_is_highest_for_uniform_and_zero_for_certain() -> None:
    scores = Entropy().from_proba(ROWS)
    assert scores[2] == pytest.approx(np.log(4), abs=1e-6)
    assert scores[3] == pytest.approx(0.0, abs=1e-6)
    assert scores[2] > scores[1] > scores[0] > scores[3]


def test_random_is_uniform_per_id_and_seeded() -> None:
    pool = make_pool("random")
    a = STRATEGIES["random"].select(pool, len(pool.rows)).all_scores
    c = STRATEGIES["random"].select(make_pool("random", seed=1), len(pool.rows)).all_scores
    assert a is not None and c is not None
    assert a.min() >= 0.0 and a.max() < 1.0 and 0.4 < a.mean() < 0.6
    assert not np.array_equal(a, c)
    firsts = {
        int(STRATEGIES["random"].select(make_pool("random", seed=s), 1).positions[0])
        for s in range(20)
    }
    assert len(firsts) > 10  # not always the lowest index


def test_bald_is_the_mutual_information_of_the_mc_samples() -> None:
    pool = make_pool("bald")
    picked = STRATEGIES["bald"].select(pool, 5)
    x = VECTORS[pool.rows[picked.positions]]
    assert pool.model is not None and hasattr(pool.model, "predict_proba_mc")
    samples = pool.model.predict_proba_mc(x, 8, pool.seed)
    mean = samples.mean(axis=0)
    h_mean = -(mean * np.log(np.maximum(mean, 1e-30))).sum(axis=1)
    mean_h = -(samples * np.log(np.maximum(samples, 1e-30))).sum(axis=2).mean(axis=0)
    np.testing.assert_allclose(picked.scores, h_mean - mean_h, rtol=1e-4, atol=1e-6)
    assert (picked.scores >= -1e-6).all()


def test_mahalanobis_prefers_points_far_from_every_labeled_class() -> None:
    far = np.full((1, DIM), 25.0, dtype=np.float32)
    vectors = np.vstack([VECTORS, far])
    rows = np.arange(40, N + 1)
    pool = Pool(
        vectors, rows, np.arange(len(vectors))[rows], TRAIN, TRUTH[TRAIN], CLASSES, None, seed=0
    )
    picked = STRATEGIES["mahalanobis"].select(pool, 1)
    assert pool.rows[picked.positions[0]] == N  # the outlier


def test_mahalanobis_matches_scipy_on_a_labeled_class() -> None:
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import LedoitWolf

    pool = make_pool("mahalanobis")
    scores = STRATEGIES["mahalanobis"].select(pool, len(pool.rows)).all_scores
    assert scores is not None
    x = VECTORS[TRAIN].astype(np.float64)
    labels = TRUTH[TRAIN]
    means = {c: x[labels == c].mean(axis=0) for c in np.unique(labels)}
    residual = x - np.stack([means[c] for c in labels])
    cov = LedoitWolf(assume_centered=True).fit(residual).covariance_
    cov[np.diag_indices_from(cov)] += 1e-6 * np.trace(cov) / len(cov)
    inv = np.linalg.inv(cov)
    row = pool.rows[0]
    expected = min(mahalanobis(VECTORS[row], mu, inv) ** 2 for mu in means.values())
    assert scores[0] == pytest.approx(expected, rel=1e-3)


def test_coreset_is_greedy_k_center() -> None:
    pool = make_pool("coreset")
    picked = STRATEGIES["coreset"].select(pool, 6)
    centers = list(VECTORS[TRAIN])
    candidates = VECTORS[pool.rows]
    for position, score in zip(picked.positions, picked.scores, strict=True):
        dist = np.sqrt(((candidates[:, None, :] - np.array(centers)[None]) ** 2).sum(-1)).min(1)
        assert dist[position] == pytest.approx(dist.max(), rel=1e-4)
        assert score == pytest.approx(dist.max(), rel=1e-4)
        centers.append(candidates[position])


def test_coreset_without_labels_starts_anywhere_then_spreads() -> None:
    pool = make_pool("coreset", train=np.zeros(0, np.intp))
    picked = STRATEGIES["coreset"].select(pool, CLASSES)
    assert np.isinf(picked.scores[0])
    assert len(set(TRUTH[pool.rows[picked.positions]].tolist())) >= CLASSES - 1


def test_badge_factorised_distances_equal_the_materialised_gradient_embedding() -> None:
    """The picks' D^2 equal k-means++ distances computed on the explicit (m, C*d) matrix."""
    pool = make_pool("badge")
    picked = STRATEGIES["badge"].select(pool, 5)
    assert pool.model is not None
    x = VECTORS[pool.rows]
    a = pool.model.predict_proba(x)
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    g = (a[:, :, None] * x[:, None, :]).reshape(len(x), -1)  # fine at this size only
    first = int(picked.positions[0])
    assert (g**2).sum(1)[first] == pytest.approx((g**2).sum(1).max(), rel=1e-5)
    for step in range(1, 5):
        centers = g[picked.positions[:step]]
        d2 = ((g[:, None, :] - centers[None]) ** 2).sum(-1).min(1)
        assert picked.scores[step] == pytest.approx(d2[picked.positions[step]], rel=1e-3, abs=1e-5)


def test_badge_spreads_like_sklearn_kmeans_plusplus() -> None:
    """Same seeding rule as sklearn's k-means++ on the dense embedding: similar spread."""
    pool = make_pool("badge")
    assert pool.model is not None
    x = VECTORS[pool.rows]
    a = pool.model.predict_proba(x)
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    g = (a[:, :, None] * x[:, None, :]).reshape(len(x), -1)

    def inertia(idx: np.ndarray) -> float:
        return float(((g[:, None, :] - g[idx][None]) ** 2).sum(-1).min(1).sum())

    ours = np.mean(
        [
            inertia(STRATEGIES["badge"].select(make_pool("badge", seed=s), 10).positions)
            for s in range(5)
        ]
    )
    theirs = np.mean(
        [inertia(kmeans_plusplus(g, 10, random_state=s, n_local_trials=1)[1]) for s in range(5)]
    )
    uniform = np.mean(
        [inertia(np.random.default_rng(s).choice(len(g), 10, replace=False)) for s in range(5)]
    )
    assert ours < uniform
    assert ours < 1.5 * theirs


@pytest.mark.parametrize("name", ["coreset", "badge"])
def test_greedy_strategies_stop_at_the_deadline(name: str) -> None:
    """One pass over the candidates per pick: a large k must not outlive the caller's
    deadline (the replica's worker would keep scoring for nobody)."""
    pool = replace(make_pool(name), deadline=Deadline(0.0))
    with pytest.raises(DeadlineExceededError, match="after 0 of 30 picks"):
        STRATEGIES[name].select(pool, 30)
    late = replace(pool, deadline=Deadline(30.0))
    assert len(STRATEGIES[name].select(late, 30).positions) == 30
