"""Domain rules of select() and predict(), on an in-memory version (no store, no gRPC)."""

from __future__ import annotations

import numpy as np
import pytest

from proxal_runtime.errors import InvalidArgumentError, NotFoundError
from proxy_service.cache import LoadedVersion
from proxy_service.classifiers import ClassifierSpec, SingleClassError
from proxy_service.selection import (
    ModelCache,
    Query,
    SelectionResult,
    TrainingSet,
    predict,
    select,
)

N, DIM, CLASSES = 300, 8, 3
RNG = np.random.default_rng(0)
CENTERS = RNG.normal(0.0, 2.0, size=(CLASSES, DIM))
TRUTH = RNG.integers(0, CLASSES, size=N)
VERSION = LoadedVersion(
    "pool",
    "v1",
    np.arange(1000, 1000 + N, dtype=np.int64),
    (CENTERS[TRUTH] + RNG.normal(size=(N, DIM))).astype(np.float32),
)
LABELED = VERSION.ids[:30]


def training(
    ids: np.ndarray = LABELED, labels: np.ndarray | None = None, num_classes: int = CLASSES
) -> TrainingSet:
    if labels is None:
        labels = TRUTH[ids - 1000]
    return TrainingSet(np.asarray(ids, np.int64), np.asarray(labels, np.int32), num_classes)


def run(
    strategy: str = "margin",
    k: int = 10,
    train: TrainingSet | None = None,
    candidates: list[int] | None = None,
    seed: int = 0,
    spec: ClassifierSpec | None = None,
    models: ModelCache | None = None,
) -> SelectionResult:
    query = Query(
        training=training() if train is None else train,
        strategy=strategy,
        k=k,
        seed=seed,
        spec=spec or ClassifierSpec(),
        candidate_ids=None if candidates is None else np.array(candidates, dtype=np.int64),
    )
    return select(lambda: VERSION, ModelCache(4) if models is None else models, query)


@pytest.mark.parametrize("strategy", ["random", "least_confidence", "margin", "entropy"])
def test_selects_k_distinct_unlabeled_ids(strategy: str) -> None:
    result = run(strategy, k=25)
    assert result.ids.dtype == np.int64 and len(result.ids) == 25
    assert len(set(result.ids.tolist())) == 25
    assert not set(result.ids.tolist()) & set(LABELED.tolist())
    assert set(result.ids.tolist()) <= set(VERSION.ids.tolist())
    assert (np.diff(result.scores) <= 0).all()  # best first
    assert result.strategy_used == strategy and result.fallback_reason == ""
    assert result.n_candidates == N - len(LABELED)
    assert min(vars(result.timings).values()) >= 0


def test_deterministic_given_the_seed() -> None:
    for strategy in ("random", "margin"):
        a, b = run(strategy, seed=4), run(strategy, seed=4)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(run("random", seed=4).ids, run("random", seed=5).ids)


def test_candidates_are_deduplicated_and_exclude_labeled_ids() -> None:
    candidates = [1000, 1000, 1001, 1100, 1100, 1200, 1201, 1299]  # 1000, 1001 are labeled
    result = run("entropy", k=4, candidates=candidates)
    assert sorted(result.ids.tolist()) == [1100, 1200, 1201, 1299]
    assert result.n_candidates == 4
    with pytest.raises(InvalidArgumentError, match="only 4 candidates"):
        run("entropy", k=5, candidates=candidates)


def test_candidate_subset_limits_the_choice() -> None:
    candidates = [1299, 1100, 1150, 1200, 1250]
    result = run("least_confidence", k=5, candidates=candidates)
    assert sorted(result.ids.tolist()) == sorted(candidates)
    top2 = run("least_confidence", k=2, candidates=candidates)
    np.testing.assert_array_equal(top2.ids, result.ids[:2])


def test_k_larger_than_candidates_says_how_many() -> None:
    with pytest.raises(InvalidArgumentError, match=f"only {N - len(LABELED)} candidates"):
        run(k=N)


@pytest.mark.parametrize("k", [0, -3])
def test_k_must_be_positive(k: int) -> None:
    with pytest.raises(InvalidArgumentError, match="k must be >= 1"):
        run(k=k)


def test_unknown_ids_are_not_found() -> None:
    with pytest.raises(NotFoundError, match=r"candidate_ids: 2 id\(s\).*\[5, 99999\]"):
        run(candidates=[1100, 5, 99999])
    with pytest.raises(NotFoundError, match=r"training ids: 1 id\(s\).*\[7\]"):
        run(train=training(np.array([1000, 1001, 7]), np.array([0, 1, 2])))


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (training(LABELED, np.zeros(29)), "30 ids but 29 labels"),
        (training(LABELED, np.full(30, 3)), r"labels must be in \[0, 3\)"),
        (training(LABELED, np.full(30, -1)), r"labels must be in \[0, 3\)"),
        (training(num_classes=1), "num_classes must be >= 2"),
        (training(np.array([1000, 1000, 1001]), np.array([0, 1, 1])), "unique.*1000"),
    ],
)
def test_bad_training_sets_are_invalid(train: TrainingSet, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        run(train=train)


@pytest.mark.parametrize(
    ("strategy", "k", "spec"),
    [
        ("margin", 0, ClassifierSpec()),
        ("nope", 1, ClassifierSpec()),
        ("margin", 1, ClassifierSpec("svm")),
    ],
)
def test_request_is_validated_before_loading(strategy: str, k: int, spec: ClassifierSpec) -> None:
    def load() -> LoadedVersion:
        raise AssertionError("loaded a version for an invalid request")

    with pytest.raises(InvalidArgumentError):
        select(load, ModelCache(1), Query(training(), strategy, k, 0, spec))


@pytest.mark.parametrize(
    ("labels_ids", "labels", "reason"),
    [
        ([], [], "no labels yet"),
        ([1000, 1001, 1002], [2, 2, 2], "all labels are class 2"),
    ],
)
def test_model_strategy_without_two_classes_falls_back_to_random(
    labels_ids: list[int], labels: list[int], reason: str
) -> None:
    train = training(np.array(labels_ids), np.array(labels))
    result = run("margin", k=8, train=train, seed=3)
    assert result.strategy_used == "random"
    assert reason in result.fallback_reason and "margin" in result.fallback_reason
    random = run("random", k=8, train=train, seed=3)
    np.testing.assert_array_equal(result.ids, random.ids)
    assert random.fallback_reason == ""


def test_predict_reuses_the_model_fitted_by_select() -> None:
    models = ModelCache(4)
    run("margin", models=models, seed=2)
    assert len(models.keys()) == 1
    result = predict(lambda: VERSION, models, training(), VERSION.ids, 2, ClassifierSpec())
    assert len(models.keys()) == 1
    assert result.labels.dtype == np.int32 and result.confidence.dtype == np.float32
    assert (result.labels == TRUTH).mean() > 0.9
    assert ((result.confidence > 1 / CLASSES) & (result.confidence <= 1)).all()
    predict(lambda: VERSION, models, training(), VERSION.ids[:3], 3, ClassifierSpec())
    assert len(models.keys()) == 2  # another seed is another model


def test_predict_keeps_request_order_and_duplicates() -> None:
    ids = np.array([1299, 1000, 1299, 1150], dtype=np.int64)
    result = predict(lambda: VERSION, ModelCache(1), training(), ids, 0, ClassifierSpec())
    assert len(result.labels) == 4 and result.labels[0] == result.labels[2]
    empty = predict(lambda: VERSION, ModelCache(1), training(), ids[:0], 0, ClassifierSpec())
    assert len(empty.labels) == 0 and len(empty.confidence) == 0


def test_predict_needs_two_classes() -> None:
    with pytest.raises(SingleClassError, match="at least two classes"):
        predict(
            lambda: VERSION,
            ModelCache(1),
            training(LABELED, np.ones(30)),
            VERSION.ids,
            0,
            ClassifierSpec(),
        )
    with pytest.raises(NotFoundError, match=r"ids: 1 id\(s\)"):
        predict(lambda: VERSION, ModelCache(1), training(), np.array([3]), 0, ClassifierSpec())
