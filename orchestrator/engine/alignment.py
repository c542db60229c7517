"""Feature alignment scores for ASVP: LogME, optionally after the PED feature adjustment.

ASVP (Wen et al., arXiv 2403.01101) compares the LogME-PED score of fine-tuned features with
that of the pre-computed features on the labeled set and refreshes the pre-computed features
when the fine-tuned ones win by more than a threshold (about 0.03).

LogME (You et al., ICML 2021, arXiv 2102.11005)
-----------------------------------------------
Features ``F`` of shape ``(n, d)``, labels in ``[0, C)``. For each class ``k`` present, the
one-hot target ``y = [labels == k]`` (shape ``(n,)``) gets the Bayesian linear model

    y = F w + e,    w ~ N(0, alpha^-1 I_d),    e ~ N(0, beta^-1 I_n),

whose log evidence (log marginal likelihood) is ``log N(y; 0, beta^-1 I_n + alpha^-1 F F^T)``.
With the thin SVD ``F = U diag(sigma) V^T`` (rank ``r``, ``U`` is ``(n, r)``), ``s = sigma^2``,
``z = U^T y`` (shape ``(r,)``) and ``t = alpha / beta``, the posterior mean ``m`` satisfies

    ||m||^2       = sum_i s_i z_i^2 / (s_i + t)^2
    ||y - F m||^2 = sum_i t^2 z_i^2 / (s_i + t)^2 + (||y||^2 - ||z||^2)

and the log evidence is exactly

    L = r/2 log alpha + n/2 log beta - 1/2 sum_i log(alpha + beta s_i)
        - alpha/2 ||m||^2 - beta/2 ||y - F m||^2 - n/2 log(2 pi).

(The ``d - r`` null directions of ``F`` cancel between the prior and the posterior volume,
so only the rank enters.) ``alpha`` and ``beta`` are maximised by MacKay's fixed point,
started at ``alpha = beta = 1``:

    gamma = sum_i beta s_i / (alpha + beta s_i),
    alpha <- gamma / ||m||^2,    beta <- (n - gamma) / ||y - F m||^2.

One SVD serves every class; the iteration is vectorised over classes. The score is the mean
over present classes of ``L / n``. Everything is float64.

Differences from the authors' released code: the evidence is evaluated at the final
(alpha, beta) with the matching posterior (their code mixes one iterate's ``m`` with the next
iterate's precisions), it counts ``r/2 log alpha`` rather than ``d/2 log alpha`` (equal for
full-column-rank features; theirs is off by ``(d - r)/2 log alpha`` when
n < d or the features are rank deficient), no ``1e-5`` is added to the denominators, and the
iteration runs to a tight tolerance instead of at most 11 steps. When a target lies (almost)
in the span of the features, typically with n <= d, the evidence keeps growing as
``beta -> inf``; alpha and beta are clipped to ``[1e-10, 1e10]`` and the iteration cap bounds
the run, so the score stays finite.

PED (Li et al., ICCV 2023, arXiv 2308.15074)
--------------------------------------------
Potential-energy descent simulates the early movement of fine-tuning before scoring: in a
space standardised per dimension (by a reference set's mean and std, by default the features
themselves), each class is a ball centred at its mean ``mu_k`` with radius
``R_k = sqrt(sum_j var_kj)``. Every overlapping pair of classes repels: the overlap
``o_kl = max(nsigma (R_k + R_l) - ||mu_k - mu_l||, 0)`` is the force, and class ``k`` is
translated (all of its points rigidly) by
``sum_l min(constant time_step^2 / 2 * o_kl, o_kl) * (mu_k - mu_l) / ||mu_k - mu_l||``.
Steps repeat (at most ``max_steps``) while a step's total movement is more than
``exit_ratio`` times the first step's. See `ped` for the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from proxal.runtime.errors import InvalidArgumentError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_ALPHA_BETA_MIN = 1e-10
_ALPHA_BETA_MAX = 1e10
_RANK_RTOL = 1e-10


@dataclass(frozen=True)
class LogMEFit:
    """Per-class result of `logme_fit`.

    Attributes:
        score: mean of ``evidence`` (the LogME score, log evidence per example).
        classes: the classes scored (those with at least one example), shape ``(K,)``.
        evidence: maximised log evidence divided by n for each class, shape ``(K,)``.
        alpha: prior precision at the optimum for each class, shape ``(K,)``.
        beta: noise precision at the optimum for each class, shape ``(K,)``.
        iterations: fixed-point iterations run.
        converged: whether every class met the tolerance within ``max_iter``.
    """

    score: float
    classes: IntArray
    evidence: FloatArray
    alpha: FloatArray
    beta: FloatArray
    iterations: int
    converged: bool


def _check_inputs(
    features: npt.ArrayLike, labels: npt.ArrayLike, num_classes: int | None
) -> tuple[FloatArray, IntArray, int]:
    """Validate and convert: float64 ``(n, d)`` features, int64 ``(n,)`` labels, class count."""
    f = np.asarray(features)
    y = np.asarray(labels)
    if f.ndim != 2:
        raise InvalidArgumentError(
            f"features must be a 2-D array (n, d); got shape {f.shape}: pass one row per example"
        )
    if y.ndim != 1:
        raise InvalidArgumentError(f"labels must be a 1-D array of class ids; got shape {y.shape}")
    if f.shape[0] != y.shape[0]:
        raise InvalidArgumentError(
            f"features has {f.shape[0]} rows but labels has {y.shape[0]} entries: "
            "pass one label per feature row"
        )
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise InvalidArgumentError(
            f"labels must be integer class ids; got dtype {y.dtype}: convert them to int"
        )
    if not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
        raise InvalidArgumentError(f"features must be real numbers; got dtype {f.dtype}")
    f64 = f.astype(np.float64, copy=False)
    if not np.all(np.isfinite(f64)):
        bad = int(np.count_nonzero(~np.isfinite(f64).all(axis=1)))
        raise InvalidArgumentError(
            f"features contain NaN or infinite values in {bad} row(s): "
            "drop or repair those rows before scoring"
        )
    y64 = y.astype(np.int64, copy=False)
    if y64.size and y64.min() < 0:
        raise InvalidArgumentError(
            f"labels must be >= 0; got {int(y64.min())}: use class ids 0..num_classes-1"
        )
    if num_classes is None:
        num_classes = int(y64.max()) + 1 if y64.size else 0
    elif num_classes < 1:
        raise InvalidArgumentError(f"num_classes must be positive; got {num_classes}")
    elif y64.size and y64.max() >= num_classes:
        raise InvalidArgumentError(
            f"label {int(y64.max())} is out of range for num_classes={num_classes}: "
            f"labels must lie in 0..{num_classes - 1}"
        )
    present = np.unique(y64)
    if present.size < 2:
        raise InvalidArgumentError(
            f"LogME needs at least 2 classes among the labeled examples; got {present.size}: "
            "label examples of another class first"
        )
    return f64, y64, num_classes


def _evidence(
    alpha: FloatArray,
    beta: FloatArray,
    s: FloatArray,
    z2: FloatArray,
    res0: FloatArray,
    n: int,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Log evidence (not divided by n), gamma, ||m||^2 and ||y - F m||^2 per class.

    ``s`` is ``(r, 1)``, ``z2`` is ``(r, K)``, ``alpha``, ``beta`` and ``res0`` are ``(K,)``.
    """
    t = alpha / beta
    denom = s + t  # (r, K)
    gamma = (s / denom).sum(axis=0)
    m2 = (s * z2 / denom**2).sum(axis=0)
    res2 = (t**2 * z2 / denom**2).sum(axis=0) + res0
    r = s.shape[0]
    log_ev = (
        0.5 * r * np.log(alpha)
        + 0.5 * n * np.log(beta)
        - 0.5 * np.log(alpha + beta * s).sum(axis=0)
        - 0.5 * alpha * m2
        - 0.5 * beta * res2
        - 0.5 * n * np.log(2.0 * np.pi)
    )
    return log_ev, gamma, m2, res2


def _thin_svd_spectrum(f: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Left singular vectors ``(n, r)`` and squared singular values ``(r,)`` of ``f``, rank r."""
    u, sigma, _ = np.linalg.svd(f, full_matrices=False)  # min(n, d) components
    if sigma.size == 0 or sigma[0] == 0.0:
        return u[:, :0], sigma[:0]
    keep = sigma > _RANK_RTOL * sigma[0]
    return u[:, keep], sigma[keep] ** 2


def logme_fit(
    features: npt.ArrayLike,
    labels: npt.ArrayLike,
    num_classes: int | None = None,
    *,
    max_iter: int = 200,
    tol: float = 1e-8,
) -> LogMEFit:
    """LogME with its per-class optima (see the module docstring for the formulae).

    Args:
        features: ``(n, d)`` real features; n < d is fine (thin SVD).
        labels: ``(n,)`` integer class ids in ``[0, num_classes)``.
        num_classes: number of classes; default ``max(labels) + 1``. Classes without examples
            are skipped (their one-hot target is all zeros and has no finite optimum), so the
            score is the mean over the classes present.
        max_iter: cap on fixed-point iterations (the paper's code stops after 11).
        tol: stop when ``alpha / beta`` changes by at most this relative amount for every class.

    Raises:
        InvalidArgumentError: mismatched lengths, fewer than 2 classes present, non-finite
            features, labels out of range or not integers.
    """
    f, y, _ = _check_inputs(features, labels, num_classes)
    n = f.shape[0]
    classes = np.unique(y)
    targets = (y[:, None] == classes[None, :]).astype(np.float64)  # (n, K)

    u, s_flat = _thin_svd_spectrum(f)
    s = s_flat[:, None]  # (r, 1)
    z = u.T @ targets  # (r, K)
    z2 = z**2
    res0 = np.maximum((targets**2).sum(axis=0) - z2.sum(axis=0), 0.0)  # outside span(F)

    k = classes.size
    alpha = np.ones(k)
    beta = np.ones(k)
    tiny = np.finfo(np.float64).tiny
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - used after the loop
        _, gamma, m2, res2 = _evidence(alpha, beta, s, z2, res0, n)
        new_alpha = np.clip(gamma / np.maximum(m2, tiny), _ALPHA_BETA_MIN, _ALPHA_BETA_MAX)
        new_beta = np.clip((n - gamma) / np.maximum(res2, tiny), _ALPHA_BETA_MIN, _ALPHA_BETA_MAX)
        t_old = alpha / beta
        t_new = new_alpha / new_beta
        alpha, beta = new_alpha, new_beta
        if np.all(np.abs(t_new - t_old) <= tol * t_old):
            converged = True
            break

    log_ev, _, _, _ = _evidence(alpha, beta, s, z2, res0, n)
    evidence = log_ev / n
    return LogMEFit(
        score=float(evidence.mean()),
        classes=classes,
        evidence=evidence,
        alpha=alpha,
        beta=beta,
        iterations=iterations,
        converged=converged,
    )


def ped(
    features: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    reference: npt.ArrayLike | None = None,
    time_step: float = 0.1,
    nsigma: float = 0.6,
    exit_ratio: float = 0.5,
    max_steps: int = 6,
    constant: float = 1.0,
    eps: float = 1e-3,
) -> FloatArray:
    """PED feature adjustment: repel overlapping classes, as in the paper's released code.

    Defaults follow the authors' evaluation script: time step 0.1, ``nsigma`` 0.6 (their
    other candidate is 0.3), exit ratio 0.5, at most 6 steps, force constant 1, std floor
    1e-3. The paper standardises with the statistics of ImageNet features from the same
    backbone (``reference``); without one, the features' own mean and std are used.

    Args:
        features: ``(n, d)`` features; not modified.
        labels: ``(n,)`` integer class ids.
        reference: ``(m, d)`` features whose per-dimension mean/std define the space the
            simulation runs in.
        time_step: simulation step; a class moves ``min(constant time_step^2 / 2 * o, o)``
            per overlapping neighbour, ``o`` being the overlap.
        nsigma: radius multiplier of each class ball.
        exit_ratio: stop once a step moves less than this fraction of the first step.
        max_steps: most steps simulated.
        constant: force constant (acceleration = constant * overlap).
        eps: floor on the standardising std.

    Returns:
        float64 ``(n, d)`` adjusted features (a copy; equal to the input when no two classes
        overlap).
    """
    f, y, _ = _check_inputs(features, labels, None)
    if max_steps < 0 or time_step <= 0 or eps <= 0:
        raise InvalidArgumentError(
            "ped needs max_steps >= 0, time_step > 0 and eps > 0; "
            f"got {max_steps}, {time_step}, {eps}"
        )
    mean, std = _standardiser(f, reference, eps)
    classes, inverse = np.unique(y, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)[:, None]  # (K, 1)
    x = (f - mean) / std
    first_move: float | None = None
    moved = False
    for _ in range(max_steps):
        shift = _ped_shift(x, inverse, counts, classes.size, nsigma, time_step, constant)
        move = float(np.abs(shift).sum())
        if first_move is None:
            if move == 0.0:
                break
            first_move = move
        elif move / first_move <= exit_ratio:
            break
        x = x + shift[inverse]
        moved = True
    if not moved:
        return f.copy()
    return np.asarray(x * std + mean, dtype=np.float64)


def _standardiser(
    f: FloatArray, reference: npt.ArrayLike | None, eps: float
) -> tuple[FloatArray, FloatArray]:
    """Per-dimension mean and std (floored at `eps`) of `reference`, else of `f` (n, d)."""
    ref = f if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != f.shape[1] or ref.shape[0] == 0:
        raise InvalidArgumentError(
            f"reference must be (m, {f.shape[1]}) with m >= 1; got shape {ref.shape}"
        )
    if not np.all(np.isfinite(ref)):
        raise InvalidArgumentError("reference features contain NaN or infinite values")
    return ref.mean(axis=0), np.maximum(ref.std(axis=0), eps)


def _ped_shift(
    x: FloatArray,
    inverse: npt.NDArray[np.intp],
    counts: FloatArray,
    k: int,
    nsigma: float,
    time_step: float,
    constant: float,
) -> FloatArray:
    """One PED step: each of the `k` classes' (k, d) shift away from the classes its ball
    overlaps (`x` (n, d) standardised features, `inverse` (n,) class index per row)."""
    centres = np.zeros((k, x.shape[1]))
    np.add.at(centres, inverse, x)
    centres /= counts
    sq = np.zeros_like(centres)
    np.add.at(sq, inverse, (x - centres[inverse]) ** 2)
    radius = np.sqrt((sq / counts).sum(axis=1))  # sqrt of the summed per-dim variances
    diff = centres[:, None, :] - centres[None, :, :]  # (K, K, d): mu_k - mu_l
    dist = np.sqrt((diff**2).sum(axis=2))
    overlap = np.maximum(abs(nsigma) * (radius[:, None] + radius[None, :]) - dist, 0.0)
    np.fill_diagonal(overlap, 0.0)
    step = np.minimum(0.5 * time_step**2 * constant * overlap, overlap)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(dist[:, :, None] > 0, diff / dist[:, :, None], 0.0)
    return np.asarray((step[:, :, None] * unit).sum(axis=1))


def logme(
    features: npt.ArrayLike,
    labels: npt.ArrayLike,
    num_classes: int | None = None,
    *,
    use_ped: bool = False,
    ped_reference: npt.ArrayLike | None = None,
) -> float:
    """LogME score: mean over present classes of the maximised log evidence per example.

    Higher means the features fit the labels better with a linear model. With ``use_ped``,
    the features are first adjusted by `ped` (default settings, standardised by
    ``ped_reference`` when given): the LogME-PED score ASVP compares.

    Raises:
        InvalidArgumentError: see `logme_fit`.
    """
    if use_ped:
        _check_inputs(features, labels, num_classes)
        features = ped(features, labels, reference=ped_reference)
    return logme_fit(features, labels, num_classes).score
