"""Domain rules of select() and predict(), on an in-memory version (no store, no gRPC)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from proxal.proxy_service import selection
from proxal.proxy_service.cache import LoadedVersion
from proxal.proxy_service.classifiers import ClassifierSpec, SingleClassError
from proxal.proxy_service.selection import (
    ModelCache,
    Query,
    SelectionResult,
    Shard,
    Subsampling,
    TrainingSet,
    predict,
    select,
)
from proxal.runtime.deadline import Deadline
from proxal.runtime.errors import DeadlineExceededError, InvalidArgumentError, NotFoundError
from proxal.runtime.ranking import top_k
from proxal.runtime.versions import EmbeddingVersion

N, DIM, CLASSES = 300, 8, 3
RNG = np.random.default_rng(0)
CENTERS = RNG.normal(0.0, 2.0, size=(CLASSES, DIM))
TRUTH = RNG.integers(0, CLASSES, size=N)
VERSION = LoadedVersion(
    EmbeddingVersion("pool", "v1"),
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


def test_predict_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Predict computes (chunk, classes) probabilities at a time: memory stays bounded."""
    whole = predict(lambda: VERSION, ModelCache(1), training(), VERSION.ids, 0, ClassifierSpec())
    monkeypatch.setattr(selection, "CHUNK_ROWS", 7)
    chunked = predict(lambda: VERSION, ModelCache(1), training(), VERSION.ids, 0, ClassifierSpec())
    np.testing.assert_array_equal(chunked.labels, whole.labels)  # no near-tie in this pool
    # BLAS may round a row's logits differently by its place in a chunk (SkylakeX's sgemv
    # does, by 1 ulp on a few rows; Haswell's does not), so compare to a few float32 ulps.
    np.testing.assert_allclose(chunked.confidence, whole.confidence, rtol=0, atol=1e-6)


def test_predict_timings_add_up_to_the_call() -> None:
    """load_s times the loader (here 50 ms), not the process: the timings fit in the call."""

    def slow_load() -> LoadedVersion:
        time.sleep(0.05)
        return VERSION

    for ids in (VERSION.ids, VERSION.ids[:3]):  # one chunk and, below, several
        begin = time.perf_counter()
        result = predict(slow_load, ModelCache(1), training(), ids, 0, ClassifierSpec())
        elapsed = time.perf_counter() - begin
        timings = result.timings
        assert 0.05 <= timings.load_s <= elapsed
        assert timings.fit_s >= 0 and timings.score_s >= 0
        assert timings.load_s + timings.fit_s + timings.score_s <= elapsed


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


def query(**fields: object) -> Query:
    base: dict[str, object] = {"training": training(), "strategy": "margin", "k": 10, "seed": 0}
    return Query(**{**base, **fields})  # type: ignore[arg-type]


def test_a_range_shard_limits_candidates_and_caps_k() -> None:
    result = select(lambda: VERSION, ModelCache(2), query(shard=Shard(1100, 1150), k=10))
    assert set(result.ids.tolist()) <= set(range(1100, 1150))
    assert result.n_candidates == 50
    small = select(lambda: VERSION, ModelCache(2), query(shard=Shard(1025, 1035), k=10))
    assert sorted(small.ids.tolist()) == list(range(1030, 1035))  # 1025..1029 are labeled
    labeled_only = select(lambda: VERSION, ModelCache(2), query(shard=Shard(1000, 1010)))
    assert len(labeled_only.ids) == 0 and labeled_only.n_candidates == 0


def test_a_range_in_a_gap_of_the_ids_is_empty_not_an_error() -> None:
    gappy = LoadedVersion(
        EmbeddingVersion("pool", "v2"), np.array([10, 11, 50, 51]), VERSION.vectors[:4].copy()
    )
    train = training(np.array([10, 50]), np.array([0, 1]))
    result = select(lambda: gappy, ModelCache(2), query(training=train, shard=Shard(20, 40)))
    assert len(result.ids) == 0 and result.n_candidates == 0
    with pytest.raises(NotFoundError, match="holds no id"):
        select(lambda: gappy, ModelCache(2), query(training=train, shard=Shard(52, 60)))


def test_an_id_list_shard_intersects_the_candidates() -> None:
    shard = Shard(ids=np.array([1100, 1101, 1102, 1200], dtype=np.int64))
    candidates = np.array([1101, 1102, 1200, 1250], dtype=np.int64)
    result = select(
        lambda: VERSION, ModelCache(2), query(shard=shard, candidate_ids=candidates, k=5)
    )
    assert sorted(result.ids.tolist()) == [1101, 1102, 1200]


def test_sharded_top_k_merges_to_the_unsharded_answer() -> None:
    whole = select(lambda: VERSION, ModelCache(2), query(k=12))
    parts = [
        select(lambda: VERSION, ModelCache(2), query(shard=Shard(lo, lo + 100), k=12))
        for lo in (1000, 1100, 1200)
    ]
    ids = np.concatenate([p.ids for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    np.testing.assert_array_equal(ids[top_k(scores, ids, 12, 0)], whole.ids)


@pytest.mark.parametrize(
    ("shard", "error", "message"),
    [
        (Shard(50, 40), InvalidArgumentError, r"start < end, got \[50, 40\)"),
        (Shard(5000, 6000), NotFoundError, r"holds no id.*1000\.\.1299"),
        (Shard(ids=np.array([1100, 7], dtype=np.int64)), NotFoundError, r"shard.ids.*\[7\]"),
    ],
)
def test_bad_shards_say_what_is_wrong(shard: Shard, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        select(lambda: VERSION, ModelCache(2), query(shard=shard))


def test_return_scores_gives_every_candidate_score() -> None:
    result = select(lambda: VERSION, ModelCache(2), query(return_scores=True))
    assert len(result.scored_ids) == N - len(LABELED) == len(result.scored_scores)
    by_id = dict(zip(result.scored_ids.tolist(), result.scored_scores.tolist(), strict=True))
    assert [by_id[i] for i in result.ids.tolist()] == result.scores.tolist()
    assert max(by_id.values()) == result.scores[0]
    assert len(select(lambda: VERSION, ModelCache(2), query()).scored_ids) == 0
    coreset = select(lambda: VERSION, ModelCache(2), query(strategy="coreset", return_scores=True))
    assert len(coreset.scored_ids) == 0  # batch strategies have no per-candidate score


def ups(previous: SelectionResult, gamma: float = 0.1, temperature: float = 0.01) -> Subsampling:
    return Subsampling(gamma, temperature, previous.scored_ids, previous.scored_scores)


def test_ups_keeps_the_top_gamma_and_a_tempered_sample() -> None:
    full = select(lambda: VERSION, ModelCache(2), query(return_scores=True, strategy="entropy"))
    sub = select(
        lambda: VERSION, ModelCache(2), query(subsampling=ups(full), return_scores=True, seed=1)
    )
    order = full.scored_ids[np.argsort(-full.scored_scores, kind="stable")]
    top_gamma = set(order[: int(0.1 * len(order))].tolist())
    kept = set(sub.scored_ids.tolist())
    assert top_gamma <= kept  # rank <= gamma: probability 1
    expected = 0.1 + 0.01  # gamma + T (1 - exp(-(1 - gamma) / T)) of the candidates
    assert abs(len(kept) / len(order) - expected) < 0.06
    assert sub.n_candidates == len(kept)
    assert set(sub.ids.tolist()) <= kept


def test_ups_always_rescores_ids_without_a_previous_score() -> None:
    half = query(candidate_ids=VERSION.ids[:150], return_scores=True, strategy="entropy")
    partial = select(lambda: VERSION, ModelCache(2), half)
    result = select(
        lambda: VERSION, ModelCache(2), query(subsampling=ups(partial), return_scores=True)
    )
    assert set(VERSION.ids[150:].tolist()) <= set(result.scored_ids.tolist())


def test_ups_with_gamma_one_rescores_everything() -> None:
    full = select(lambda: VERSION, ModelCache(2), query(return_scores=True))
    again = select(lambda: VERSION, ModelCache(2), query(subsampling=ups(full, gamma=1.0)))
    assert again.n_candidates == full.n_candidates


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (Subsampling(0.0, 0.01, np.zeros(0, np.int64), np.zeros(0, np.float32)), "gamma"),
        (Subsampling(0.1, 0.0, np.zeros(0, np.int64), np.zeros(0, np.float32)), "temperature"),
        (Subsampling(0.1, 0.01, np.arange(3), np.zeros(2, np.float32)), "one score per id"),
        (Subsampling(0.1, 0.01, np.arange(2), np.array([0, np.nan], np.float32)), "finite"),
        (Subsampling(0.1, 0.01, np.array([4, 4]), np.zeros(2, np.float32)), "unique"),
    ],
)
def test_bad_subsampling_is_invalid(sub: Subsampling, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        select(lambda: VERSION, ModelCache(2), query(subsampling=sub))


def test_a_passed_deadline_stops_the_selection() -> None:
    def slow_load() -> LoadedVersion:
        time.sleep(0.05)
        return VERSION

    with pytest.raises(DeadlineExceededError, match="after loading the version"):
        select(slow_load, ModelCache(2), query(), deadline=Deadline(0.01))
    assert len(select(slow_load, ModelCache(2), query(), deadline=Deadline(30)).ids) == 10


@pytest.mark.parametrize("strategy", ["bald", "mahalanobis", "coreset", "badge"])
def test_new_strategies_run_through_select(strategy: str) -> None:
    spec = ClassifierSpec(kind="mlp", max_iter=20) if strategy == "bald" else ClassifierSpec()
    result = select(lambda: VERSION, ModelCache(2), query(strategy=strategy, spec=spec, k=15))
    assert result.strategy_used == strategy and len(set(result.ids.tolist())) == 15
    assert not set(result.ids.tolist()) & set(LABELED.tolist())


def test_badge_cold_start_falls_back_to_coreset() -> None:
    empty = training(np.zeros(0, np.int64), np.zeros(0, np.int32))
    result = select(lambda: VERSION, ModelCache(2), query(strategy="badge", training=empty))
    assert result.strategy_used == "coreset"
    assert "no labels yet" in result.fallback_reason and "with coreset" in result.fallback_reason


@pytest.mark.parametrize("strategy", ["random", "margin", "coreset", "badge"])
def test_picks_carry_the_proxy_prediction(strategy: str) -> None:
    """Every strategy's picks come with the fitted proxy's class and probability, the same
    as predict() gives for those ids (random and core-set fit a proxy for them too)."""
    models = ModelCache(4)
    result = run(strategy, k=12, seed=5, models=models)
    assert result.predicted_labels.dtype == np.int32 and len(result.predicted_labels) == 12
    assert result.predicted_probabilities.dtype == np.float32
    assert ((result.predicted_probabilities > 0) & (result.predicted_probabilities <= 1)).all()
    want = predict(lambda: VERSION, models, training(), result.ids, 5, ClassifierSpec())
    np.testing.assert_array_equal(result.predicted_labels, want.labels)
    np.testing.assert_allclose(result.predicted_probabilities, want.confidence, atol=1e-6)


@pytest.mark.parametrize("labels", [[], [2, 2, 2]])
def test_no_prediction_without_labels_of_two_classes(labels: list[int]) -> None:
    train = training(VERSION.ids[: len(labels)], np.array(labels))
    result = run("margin", k=8, train=train)
    assert len(result.ids) == 8
    assert len(result.predicted_labels) == 0 and len(result.predicted_probabilities) == 0
