"""LogME and PED (engine.alignment): exactness, ordering, robustness, errors."""

from __future__ import annotations

import numpy as np
import pytest
from proxal.orchestrator_service.engine.alignment import logme, logme_fit, ped
from proxal.runtime.errors import InvalidArgumentError
from scipy.stats import multivariate_normal


def _direct_evidence(f: np.ndarray, target: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, beta^-1 I + alpha^-1 F F^T) / n with full matrices."""
    n = f.shape[0]
    cov = np.eye(n) / beta + f @ f.T / alpha
    return float(multivariate_normal(np.zeros(n), cov).logpdf(target)) / n


def _clustered(rng: np.random.Generator, n: int, d: int, k: int, sep: float, noise: float):
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)  # every class present
    f = sep * np.eye(k, d)[y] + noise * rng.normal(size=(n, d))
    return f, y


@pytest.mark.parametrize(("n", "d"), [(40, 5), (60, 8), (12, 30)])
def test_evidence_matches_direct_computation(n: int, d: int) -> None:
    rng = np.random.default_rng(n * 100 + d)
    f, y = _clustered(rng, n, d, k=3, sep=2.0, noise=1.0)
    fit = logme_fit(f, y)
    assert fit.classes.tolist() == [0, 1, 2]
    for k, c in enumerate(fit.classes):
        target = (y == c).astype(np.float64)
        direct = _direct_evidence(f, target, fit.alpha[k], fit.beta[k])
        assert fit.evidence[k] == pytest.approx(direct, abs=1e-9)
    assert fit.score == pytest.approx(float(np.mean(fit.evidence)))


@pytest.mark.parametrize(("n", "d"), [(40, 5), (60, 8)])
def test_fixed_point_is_a_local_maximum(n: int, d: int) -> None:
    rng = np.random.default_rng(7 + n)
    f, y = _clustered(rng, n, d, k=3, sep=2.0, noise=1.0)
    fit = logme_fit(f, y)
    assert fit.converged
    for k, c in enumerate(fit.classes):
        target = (y == c).astype(np.float64)
        a, b = fit.alpha[k], fit.beta[k]
        best = _direct_evidence(f, target, a, b)
        for fa, fb in [(1.05, 1), (0.95, 1), (1, 1.05), (1, 0.95), (1.05, 1.05), (0.95, 0.95)]:
            assert _direct_evidence(f, target, a * fa, b * fb) < best


def test_separable_beats_random_and_shuffled_labels() -> None:
    rng = np.random.default_rng(1)
    f, y = _clustered(rng, 120, 16, k=4, sep=3.0, noise=0.3)
    random_f = rng.normal(size=f.shape)
    separable = logme(f, y)
    assert separable > logme(random_f, y) + 0.5
    assert separable > logme(f, rng.permutation(y)) + 0.5


def test_rank_deficient_low_n_and_duplicates() -> None:
    rng = np.random.default_rng(2)
    f, y = _clustered(rng, 10, 40, k=2, sep=1.0, noise=1.0)  # n < d
    assert np.isfinite(logme(f, y))
    g, gy = _clustered(rng, 30, 5, k=2, sep=1.0, noise=1.0)
    dup_f, dup_y = np.vstack([g, g]), np.concatenate([gy, gy])  # duplicate rows
    fit = logme_fit(dup_f, dup_y)
    assert np.isfinite(fit.score)
    target = (dup_y == 1).astype(np.float64)
    assert fit.evidence[1] == pytest.approx(
        _direct_evidence(dup_f, target, fit.alpha[1], fit.beta[1]), abs=1e-9
    )
    zero_col = np.hstack([f, np.zeros((10, 3)), f[:, :1]])  # zero and repeated columns
    assert np.isfinite(logme(zero_col, y))


def test_deterministic_and_invariant_to_order_and_class_ids() -> None:
    rng = np.random.default_rng(3)
    f, y = _clustered(rng, 50, 6, k=3, sep=2.0, noise=1.0)
    score = logme(f, y)
    assert logme(f, y) == score
    perm = rng.permutation(50)
    assert logme(f[perm], y[perm]) == pytest.approx(score, abs=1e-10)
    relabel = np.array([2, 0, 1])[y]
    assert logme(f, relabel) == pytest.approx(score, abs=1e-10)
    assert logme(f.astype(np.float32), y) == pytest.approx(
        logme(f.astype(np.float32).astype(np.float64), y)
    )


def test_absent_class_is_skipped() -> None:
    rng = np.random.default_rng(4)
    f, y = _clustered(rng, 40, 5, k=3, sep=2.0, noise=1.0)
    fit = logme_fit(f, y, num_classes=5)  # classes 3 and 4 have no examples
    assert fit.classes.tolist() == [0, 1, 2]
    assert fit.score == logme(f, y)
    gap = np.where(y == 1, 3, y)  # class 1 absent, ids 0, 2, 3
    assert logme_fit(f, gap).classes.tolist() == [0, 2, 3]


@pytest.mark.parametrize(
    ("features", "labels", "num_classes", "message"),
    [
        (np.zeros((4, 2)), np.array([0, 1, 0]), None, "one label per feature row"),
        (np.ones((4, 2)), np.array([1, 1, 1, 1]), None, "at least 2 classes"),
        (np.array([[0.0, np.nan], [1, 2], [3, 4]]), np.array([0, 1, 0]), None, "NaN or infinite"),
        (np.array([[0.0, np.inf], [1, 2], [3, 4]]), np.array([0, 1, 0]), None, "NaN or infinite"),
        (np.ones((3, 2)), np.array([0, 1, 3]), 3, "out of range for num_classes=3"),
        (np.ones((3, 2)), np.array([0, -1, 1]), None, "must be >= 0"),
        (np.ones((3, 2)), np.array([0.0, 1.0, 0.0]), None, "integer class ids"),
        (np.ones(3), np.array([0, 1, 0]), None, "2-D array"),
    ],
)
def test_errors_say_what_to_fix(
    features: np.ndarray, labels: np.ndarray, num_classes: int | None, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        logme(features, labels, num_classes)
    with pytest.raises(InvalidArgumentError, match=message):
        logme(features, labels, num_classes, use_ped=True)


def test_ped_flag_off_is_plain_logme() -> None:
    rng = np.random.default_rng(5)
    f, y = _clustered(rng, 60, 8, k=3, sep=1.0, noise=1.0)
    assert logme(f, y, use_ped=False) == logme_fit(f, y).score
    assert logme(f, y, use_ped=True) == logme_fit(ped(f, y), y).score


def test_ped_moves_overlapping_classes_apart_and_helps_logme() -> None:
    rng = np.random.default_rng(6)
    f, y = _clustered(rng, 120, 12, k=4, sep=0.8, noise=1.0)
    original = f.copy()
    moved = ped(f, y)
    np.testing.assert_array_equal(f, original)  # input untouched
    assert moved.shape == f.shape
    # rigid per-class translation: within-class offsets unchanged
    for c in range(4):
        delta = moved[y == c] - f[y == c]
        np.testing.assert_allclose(delta, np.broadcast_to(delta[0], delta.shape), atol=1e-12)

    def spread(x: np.ndarray) -> float:
        centres = np.stack([x[y == c].mean(axis=0) for c in range(4)])
        return float(np.linalg.norm(centres[:, None] - centres[None], axis=2).sum())

    assert spread(moved) > spread(f)
    assert logme(f, y, use_ped=True) >= logme(f, y)


def test_ped_keeps_order_and_leaves_separated_classes_alone() -> None:
    rng = np.random.default_rng(8)
    f, y = _clustered(rng, 120, 16, k=4, sep=2.0, noise=0.8)
    random_f = rng.normal(size=f.shape)
    assert logme(f, y, use_ped=True) > logme(random_f, y, use_ped=True)
    far, far_y = _clustered(rng, 80, 6, k=3, sep=100.0, noise=0.1)
    np.testing.assert_array_equal(ped(far, far_y), far)  # no overlap, no movement
    ref = rng.normal(size=(30, 16)) * 3.0
    assert np.isfinite(logme(f, y, use_ped=True, ped_reference=ref))
