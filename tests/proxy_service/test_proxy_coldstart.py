"""Cold start and class balance: k-means initial batches and class-balanced selection."""

from __future__ import annotations

import numpy as np
import pytest
from proxal.proxy_service import selection, strategies
from proxal.proxy_service.cache import LoadedVersion
from proxal.proxy_service.classifiers import ClassifierSpec
from proxal.proxy_service.selection import ModelCache, Query, SelectionResult, TrainingSet
from proxal.proxy_service.strategies import balanced_top_k
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.versions import EmbeddingVersion

BLOBS, DIM = 12, 16
RNG = np.random.default_rng(7)
CENTRES = RNG.normal(0.0, 10.0, size=(BLOBS, DIM))
# One blob holds half the pool, the other eleven share the rest: random picks miss blobs.
SIZES = np.array([600] + [55] * (BLOBS - 1))
BLOB = np.repeat(np.arange(BLOBS), SIZES)
N = len(BLOB)
VERSION = LoadedVersion(
    EmbeddingVersion("pool", "v1"),
    np.arange(5000, 5000 + N, dtype=np.int64),
    (CENTRES[BLOB] + RNG.normal(size=(N, DIM))).astype(np.float32),
)


def blob_of(ids: np.ndarray) -> np.ndarray:
    return BLOB[ids - 5000]


def run(
    k: int,
    labeled: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    strategy: str = "margin",
    seed: int = 0,
    **options: object,
) -> SelectionResult:
    ids = np.zeros(0, np.int64) if labeled is None else labeled
    classes = blob_of(ids) if labels is None else labels
    query = Query(
        training=TrainingSet(ids.astype(np.int64), classes.astype(np.int32), BLOBS),
        strategy=strategy,
        k=k,
        seed=seed,
        spec=ClassifierSpec(),
        **options,  # type: ignore[arg-type]
    )
    return selection.select(lambda: VERSION, ModelCache(4), query)


def test_kmeans_picks_are_distinct_real_candidates_and_seeded() -> None:
    labeled = VERSION.ids[:5]  # all of blob 0: the proxy cannot be fitted yet
    result = run(BLOBS, labeled, initial="kmeans", seed=3)
    assert result.strategy_used == "kmeans"
    assert "selected with kmeans instead" in result.fallback_reason
    picks = result.ids.tolist()
    assert len(set(picks)) == BLOBS and set(picks) <= set(VERSION.ids.tolist())
    assert not set(picks) & set(labeled.tolist())
    assert (np.diff(result.scores) <= 0).all() and result.scores.sum() <= 1.0
    again = run(BLOBS, labeled, initial="kmeans", seed=3)
    np.testing.assert_array_equal(again.ids, result.ids)


def test_kmeans_covers_more_blobs_than_random() -> None:
    kmeans = [len(set(blob_of(run(BLOBS, initial="kmeans", seed=s).ids))) for s in range(3)]
    random = [len(set(blob_of(run(BLOBS, initial="random", seed=s).ids))) for s in range(3)]
    assert min(kmeans) >= BLOBS - 1
    assert sum(kmeans) > sum(random)
    assert run(BLOBS, seed=0).strategy_used == "random"  # "" is random, as before


def test_kmeans_moves_away_from_one_labeled_class() -> None:
    labeled = VERSION.ids[BLOB == 3][:10]
    result = run(BLOBS - 1, labeled, initial="kmeans")
    assert 3 not in set(blob_of(result.ids).tolist())


def test_kmeans_clusters_a_sample_of_a_large_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strategies, "KMEANS_SAMPLE", 300)
    monkeypatch.setattr(selection, "KMEANS_SAMPLE", 300)
    result = run(BLOBS, initial="kmeans")
    assert f"sample of 300 of the {N} candidates" in result.fallback_reason
    assert len(set(result.ids.tolist())) == BLOBS


def test_invalid_initial_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="valid initial batches: random, kmeans"):
        run(4, initial="dbscan")


def test_balanced_top_k_takes_turns_by_class() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1], dtype=np.float32)
    classes = np.array([0, 0, 0, 0, 1, 2], dtype=np.int64)
    ids = np.arange(6, dtype=np.int64)
    # class 0 leads (0.9), then 1 (0.5), then 2 (0.1); 2 runs out and gives its turn away
    assert balanced_top_k(scores, classes, ids, 5, seed=0).tolist() == [0, 4, 5, 1, 2]
    assert balanced_top_k(scores, classes, ids, 2, seed=0).tolist() == [0, 4]


@pytest.mark.parametrize("strategy", ["margin", "random"])
def test_class_balanced_spreads_a_batch_over_predicted_classes(strategy: str) -> None:
    labeled = np.concatenate([VERSION.ids[b == BLOB][:3] for b in range(BLOBS)])
    plain = run(24, labeled, strategy=strategy, seed=1)
    balanced = run(24, labeled, strategy=strategy, seed=1, class_balanced=True)
    assert balanced.strategy_used == strategy and len(set(balanced.ids.tolist())) == 24
    training = TrainingSet(labeled, blob_of(labeled).astype(np.int32), BLOBS)
    predicted = selection.predict(
        lambda: VERSION, ModelCache(4), training, balanced.ids, 1, ClassifierSpec()
    ).labels
    counts = np.bincount(predicted, minlength=BLOBS)
    assert counts.max() == counts.min() == 2  # 24 picks, 12 predicted classes: two each
    plain_counts = np.bincount(blob_of(plain.ids), minlength=BLOBS)
    assert plain_counts.max() > 2


def test_class_balanced_is_ignored_until_two_classes() -> None:
    result = run(6, initial="kmeans", class_balanced=True)
    assert result.strategy_used == "kmeans" and len(result.ids) == 6
