"""The logistic-regression proxy: probabilities, unseen classes, agreement with sklearn."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from proxal.proxy_service import classifiers
from proxal.proxy_service.classifiers import (
    ClassifierSpec,
    LogisticRegressionProxy,
    SingleClassError,
    build_classifier,
)
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info


def blobs(n: int, classes: list[int], dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.5, size=(max(classes) + 1, dim))
    y = rng.choice(classes, size=n)
    X = (centers[y] + rng.normal(size=(n, dim))).astype(np.float32)
    return X, y


def test_proba_rows_sum_to_one_with_all_columns() -> None:
    X, y = blobs(300, [0, 1, 2, 3])
    model = LogisticRegressionProxy().fit(X, y, num_classes=6)
    proba = model.predict_proba(X)
    assert proba.dtype == np.float32 and proba.shape == (300, 6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (proba[:, 4:] == 0).all()
    assert model.coef_.dtype == np.float32 and model.classes_.tolist() == [0, 1, 2, 3]


def test_unseen_classes_get_zero_probability() -> None:
    X, y = blobs(200, [1, 3, 4])
    proba = LogisticRegressionProxy().fit(X, y, num_classes=5).predict_proba(X)
    assert (proba[:, [0, 2]] == 0).all()
    assert (proba[:, [1, 3, 4]] > 0).all()


@pytest.mark.parametrize("classes", [[0, 1, 2, 3], [2, 5], list(range(12))])
def test_agrees_with_sklearn(classes: list[int]) -> None:
    """Few classes score by blocked gemv, many by one gemm: both must match sklearn."""
    X, y = blobs(1500, classes, dim=16, seed=1)
    ours = LogisticRegressionProxy(C=0.5, max_iter=300, seed=3).fit(X, y, num_classes=12)
    ref = LogisticRegression(C=0.5, max_iter=300, random_state=3).fit(X, y)
    assert len(X) > 2 * classifiers.GEMV_BLOCK_ROWS  # several blocks
    np.testing.assert_allclose(
        ours.predict_proba(X)[:, ref.classes_], ref.predict_proba(X), atol=1e-5
    )
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.predict(X).dtype == np.int32


def test_fit_is_deterministic() -> None:
    X, y = blobs(300, [0, 1, 2])
    a = LogisticRegressionProxy(seed=5).fit(X, y, 3)
    b = LogisticRegressionProxy(seed=5).fit(X, y, 3)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_single_class_cannot_be_fitted() -> None:
    X, _ = blobs(10, [0, 1])
    with pytest.raises(SingleClassError, match="at least two classes"):
        LogisticRegressionProxy().fit(X, np.full(10, 2), num_classes=3)
    assert issubclass(SingleClassError, FailedPreconditionError)


def test_labels_must_fit_num_classes() -> None:
    X, y = blobs(50, [0, 1, 3])
    with pytest.raises(InvalidArgumentError, match=r"\[0, 3\), got 0..3"):
        LogisticRegressionProxy().fit(X, y, num_classes=3)


def test_build_classifier_defaults() -> None:
    for kind in ("", "logreg"):
        model = build_classifier(ClassifierSpec(kind=kind), seed=9)
        assert isinstance(model, LogisticRegressionProxy)
        assert (model.C, model.max_iter, model.seed) == (1.0, 200, 9)
    model = build_classifier(ClassifierSpec(c=0.25, max_iter=50), seed=0)
    assert (model.C, model.max_iter) == (0.25, 50)
    assert ClassifierSpec().resolved() == ClassifierSpec("logreg", 1.0, 200)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ClassifierSpec(kind="svm"), "valid kinds: logreg"),
        (ClassifierSpec(c=-1.0), "C must be"),
        (ClassifierSpec(c=float("nan")), "C must be"),
        (ClassifierSpec(c=float("inf")), "C must be"),
        (ClassifierSpec(max_iter=-5), "max_iter must be"),
        (ClassifierSpec(max_iter=10**6), "max_iter must be"),
    ],
)
def test_bad_specs_are_invalid(spec: ClassifierSpec, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build_classifier(spec, seed=0)


def test_concurrent_fits_agree_and_leave_thread_limits_alone() -> None:
    X, y = blobs(300, [0, 1, 2])
    before = {i["filepath"]: i["num_threads"] for i in threadpool_info()}
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: LogisticRegressionProxy().fit(X, y, 3), range(8)))
    assert {i["filepath"]: i["num_threads"] for i in threadpool_info()} == before
    for model in models[1:]:
        np.testing.assert_array_equal(model.coef_, models[0].coef_)
