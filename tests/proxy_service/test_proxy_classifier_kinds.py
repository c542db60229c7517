"""The contract every proxy kind keeps (logreg, mlp, lightgbm), and the MLP's MC-dropout."""

from __future__ import annotations

import numpy as np
import pytest
from proxal.proxy_service.cache import LoadedVersion
from proxal.proxy_service.classifiers import (
    KINDS,
    ClassifierSpec,
    LightGBMProxy,
    LogisticRegressionProxy,
    MLPProxy,
    ProxyClassifier,
    SingleClassError,
    build_classifier,
)
from proxal.proxy_service.selection import ModelCache, Query, TrainingSet, select
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.versions import EmbeddingVersion

NUM_CLASSES, DIM = 6, 32
SEEN = [0, 1, 3, 4]  # classes 2 and 5 are never labeled


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(0.0, 1.0, size=(NUM_CLASSES, DIM))
    y = rng.choice(SEEN, size=n)
    return (centers[y] + rng.normal(0.0, 0.5, size=(n, DIM))).astype(np.float32), y


X_TRAIN, Y_TRAIN = blobs(400, seed=1)
X_TEST, Y_TEST = blobs(200, seed=2)


def fitted(kind: str, seed: int = 0) -> ProxyClassifier:
    return build_classifier(ClassifierSpec(kind=kind), seed).fit(X_TRAIN, Y_TRAIN, NUM_CLASSES)


@pytest.fixture(scope="module", params=KINDS)
def kind_and_model(
    request: pytest.FixtureRequest,
) -> tuple[str, ProxyClassifier]:
    return request.param, fitted(request.param)


def test_build_classifier_dispatches_with_per_kind_defaults() -> None:
    expected = {
        "logreg": (LogisticRegressionProxy, 1.0, 200),
        "mlp": (MLPProxy, 1.0, 200),
        "lightgbm": (LightGBMProxy, 1.0, 100),
    }
    assert set(expected) == set(KINDS)
    for kind, (cls, c, max_iter) in expected.items():
        assert ClassifierSpec(kind=kind).resolved() == ClassifierSpec(kind, c, max_iter)
        model = build_classifier(ClassifierSpec(kind=kind), seed=7)
        assert type(model) is cls
        assert (model.C, model.max_iter, model.seed) == (c, max_iter, 7)
    with pytest.raises(InvalidArgumentError, match="valid kinds: logreg, mlp, lightgbm"):
        build_classifier(ClassifierSpec(kind="svm"), seed=0)


def test_proba_contract(
    kind_and_model: tuple[str, ProxyClassifier],
) -> None:
    _, model = kind_and_model
    proba = model.predict_proba(X_TEST)
    assert proba.dtype == np.float32 and proba.shape == (len(X_TEST), NUM_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (proba[:, [2, 5]] == 0).all()
    assert model.classes_.tolist() == SEEN and model.num_classes_ == NUM_CLASSES
    assert (model.predict(X_TEST) == Y_TEST).mean() > 0.9


def test_fit_is_deterministic(
    kind_and_model: tuple[str, ProxyClassifier],
) -> None:
    kind, model = kind_and_model
    again = fitted(kind)
    np.testing.assert_array_equal(again.predict_proba(X_TEST), model.predict_proba(X_TEST))


@pytest.mark.parametrize("kind", KINDS)
def test_single_class_cannot_be_fitted(kind: str) -> None:
    model = build_classifier(ClassifierSpec(kind=kind), seed=0)
    with pytest.raises(SingleClassError, match="at least two classes"):
        model.fit(X_TRAIN[:20], np.full(20, 3), NUM_CLASSES)


def test_mlp_seed_changes_the_fit() -> None:
    a, b = fitted("mlp", seed=0), fitted("mlp", seed=1)
    assert isinstance(a, MLPProxy) and isinstance(b, MLPProxy)
    assert not np.array_equal(a.w1_, b.w1_)


def test_mlp_mc_dropout_samples_vary_around_the_eval_proba() -> None:
    model = fitted("mlp")
    assert isinstance(model, MLPProxy)
    mc = model.predict_proba_mc(X_TEST, samples=30, seed=3)
    assert mc.dtype == np.float32 and mc.shape == (30, len(X_TEST), NUM_CLASSES)
    np.testing.assert_allclose(mc.sum(axis=2), 1.0, atol=1e-5)
    assert (mc[..., [2, 5]] == 0).all()
    assert not np.array_equal(mc[0], mc[1])
    assert np.abs(mc.mean(axis=0) - model.predict_proba(X_TEST)).max() < 0.05
    np.testing.assert_array_equal(mc, model.predict_proba_mc(X_TEST, samples=30, seed=3))


def test_select_with_the_mlp_proxy() -> None:
    ids = np.arange(5000, 5000 + len(X_TEST), dtype=np.int64)
    version = LoadedVersion(EmbeddingVersion("pool", "v1"), ids, X_TEST)
    truth = Y_TEST.astype(np.int32)
    labeled = np.concatenate([np.flatnonzero(truth == c)[:5] for c in SEEN])
    training = TrainingSet(ids[labeled], truth[labeled], NUM_CLASSES)
    query = Query(training, "margin", 15, 0, ClassifierSpec(kind="mlp"))
    result = select(lambda: version, ModelCache(2), query)
    assert result.strategy_used == "margin" and result.fallback_reason == ""
    assert len(result.ids) == 15 and len(set(result.ids.tolist())) == 15
    assert not set(result.ids.tolist()) & set(ids[labeled].tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_balanced_class_weights_lift_the_rare_class(kind: str) -> None:
    """With 95:5 labels on overlapping classes, balanced weights predict the rare class
    more often (higher recall), as sklearn's class_weight="balanced" does."""
    rng = np.random.default_rng(5)
    n_major, n_minor = 380, 20
    X = np.vstack(
        [rng.normal(0.0, 1.0, (n_major, DIM)), rng.normal(0.6, 1.0, (n_minor, DIM))]
    ).astype(np.float32)
    y = np.array([0] * n_major + [1] * n_minor)
    X_eval = rng.normal(0.6, 1.0, (300, DIM)).astype(np.float32)  # all from the rare class
    recall = {}
    for balanced in (False, True):
        spec = ClassifierSpec(kind=kind, max_iter=60 if kind == "mlp" else 0, balanced=balanced)
        model = build_classifier(spec, seed=0).fit(X, y, 2)
        assert model.balanced is balanced
        recall[balanced] = float((model.predict(X_eval) == 1).mean())
    assert recall[True] > recall[False] + 0.1, recall
