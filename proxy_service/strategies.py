"""Query strategies: choose the k most informative candidates of a pool.

Every strategy is a small class with one entry point, ``select(pool, k)``. Pointwise
strategies give each candidate a score (higher = more informative) and take the top k with
`proxal.runtime.ranking.top_k`, whose order depends on (score, seed, id) only, so a pool
split into shards merges back to the same answer (``decomposable``). BLAS may round a
row's float32 score differently in the last bit by its place in a chunk, so the candidates
that could reach the top k are scored again one row at a time (`PointwiseStrategy.settle`):
the ids and scores picked are the same for any chunking or sharding. Batch strategies
(core-set, BADGE) pick greedily, each pick depending on the earlier ones; they are not
decomposable, and a sharded selection runs them in two stages (see rpc.sharding).

Scoring runs over row chunks on a small thread pool (numpy releases the GIL), so memory
stays bounded by a chunk and a pass over a 1M x 384 pool reads the matrix once.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from proxal.proxy_service import kernel
from proxal.proxy_service.classifiers import (
    MLP,
    LogisticRegressionProxy,
    MLPProxy,
    ProxyClassifier,
)
from proxal.runtime import uncertainty
from proxal.runtime.deadline import Deadline
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.ranking import id_uniform, top_k
from proxal.runtime.strategies import DEFAULT_STRATEGY  # margin: the contract's default
from sklearn.cluster import KMeans
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import ConvergenceWarning

Matrix = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float32]
Rows = npt.NDArray[np.intp]

CHUNK_ROWS = 4096
# A bound on how far BLAS's chunk-dependent rounding moves a float32 score, relative to
# max(1, |score|): observed differences are ~1e-7; 1e-4 leaves a wide margin.
SCORE_SLACK = 1e-4
ROW_ALIGN_BYTES = 64  # the one-row buffer's alignment (a cache line, an AVX-512 vector)
MAX_SETTLE_ROWS = 20_000  # ~15 us a row: at most ~0.3 s of one-row scoring per request
DEFAULT_MC_SAMPLES = 20
MAX_MC_SAMPLES = 1000
PICKS_PER_DEADLINE_CHECK = 16  # greedy strategies check the deadline this often
KMEANS_SAMPLE = 20_000  # k-means initial batches cluster at most this many candidates
KMEANS_MAX_ITER = 100


@dataclass(frozen=True)
class Pool:
    """Everything a strategy may look at for one selection.

    ``vectors`` (N, d) is the whole embedding version (read-only); the candidates are its
    rows ``rows`` (m,) ascending, with ids ``ids`` (m,). The labeled examples are rows
    ``train_rows`` (n,) with classes ``labels`` (n,) in [0, num_classes). ``model`` is the
    fitted proxy for strategies that need one, else None. Greedy strategies (a pass over the
    candidates per pick) stop with DeadlineExceededError once ``deadline`` has passed.
    """

    vectors: Matrix  # float16 values where the version is held so: see kernel_select
    rows: Rows
    ids: npt.NDArray[np.int64]
    train_rows: Rows
    labels: npt.NDArray[np.int32]
    num_classes: int
    model: ProxyClassifier | None
    seed: int
    mc_samples: int = DEFAULT_MC_SAMPLES
    threads: int = 1
    deadline: Deadline = field(default_factory=Deadline)
    row_by_row: bool = False  # map_rows one row per call: results independent of chunking
    keep_scores: bool = True  # kernel strategies: return every candidate's score
    # A float16 ``vectors``: the float32 rows' norms (N,) and their float32 rows by row.
    norms: Scores | None = None
    exact_rows: Callable[[Rows], Matrix] | None = None

    def check_deadline(self, step: int, k: int) -> None:
        """Every PICKS_PER_DEADLINE_CHECK picks of k: stop if the deadline has passed."""
        if step % PICKS_PER_DEADLINE_CHECK == 0:
            self.deadline.check(f"{step} of {k} picks")

    def map_rows(self, fn: Callable[[Matrix], npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        """fn applied to the candidate vectors chunk by chunk: (m, ...) float32 results.

        A chunk whose rows are nearly contiguous is read as a slice of ``vectors`` (no copy),
        otherwise gathered; chunks run on ``threads`` threads. With ``row_by_row``, see
        `map_each_row`.
        """
        if self.row_by_row:
            return self.map_each_row(fn)
        starts = range(0, len(self.rows), CHUNK_ROWS)

        def run(start: int) -> npt.NDArray[np.float32]:
            rows = self.rows[start : start + CHUNK_ROWS]
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            if hi - lo <= len(rows) + len(rows) // 4:
                return fn(self.vectors[lo:hi])[rows - lo]
            return fn(self.vectors[rows])

        if not len(self.rows):
            return np.zeros(0, dtype=np.float32)
        if self.threads <= 1 or len(starts) == 1:
            parts = [run(s) for s in starts]
        else:
            with ThreadPoolExecutor(self.threads) as pool:
                parts = list(pool.map(run, starts))
        return np.concatenate(parts)

    def map_each_row(
        self, fn: Callable[[Matrix], npt.NDArray[np.float32]]
    ) -> npt.NDArray[np.float32]:
        """fn applied to one candidate at a time: (m, ...) float32 results.

        Each row is copied into the same 64-byte-aligned (1, d) buffer, so BLAS sees the
        same call for a row whatever chunk, shard or subset it came from: its result depends
        on the row's values only. One call per row: meant for a few rows.
        """
        return each_row(self.vectors, self.rows, fn)

    def exact(self, rows: Rows) -> Matrix:
        """The float32 vectors (n, d) of version rows (n,): read by id for a float16 matrix."""
        if self.vectors.dtype == np.float32:
            return self.vectors[rows]
        assert self.exact_rows is not None, "a float16 pool comes with its float32 rows' source"
        return self.exact_rows(rows)

    def matvec(self, matrix: Matrix, vector: Matrix) -> Scores:
        """matrix (r, d) @ vector (d,) -> (r,), split over ``threads`` row blocks."""
        if self.threads <= 1 or len(matrix) < 2 * CHUNK_ROWS:
            return matrix @ vector
        out = np.empty(len(matrix), dtype=np.float32)
        bounds = np.linspace(0, len(matrix), self.threads + 1).astype(int)

        def run(i: int) -> None:
            lo, hi = bounds[i], bounds[i + 1]
            np.dot(matrix[lo:hi], vector, out=out[lo:hi])

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(run, range(self.threads)))
        return out

    def candidate_matrix(self) -> tuple[Matrix, Rows]:
        """(matrix, positions): candidate i is matrix[positions[i]].

        The whole version when candidates are most of it (no copy), else a gathered copy.
        """
        if 2 * len(self.rows) >= len(self.vectors):
            return self.vectors, self.rows
        return self.vectors[self.rows], np.arange(len(self.rows))


def each_row(
    matrix: Matrix, rows: Rows, fn: Callable[[Matrix], npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    """fn applied to matrix[rows] (n, d) one row at a time, each in the same 64-byte-aligned
    (1, d) float32 buffer, so its result depends on the row's values only: (n, ...)."""
    dim = matrix.shape[1]
    raw = np.empty(dim + ROW_ALIGN_BYTES // 4, dtype=np.float32)
    skip = (-raw.ctypes.data % ROW_ALIGN_BYTES) // 4
    row = raw[skip : skip + dim].reshape(1, dim)
    parts = []
    for index in rows:
        row[0] = matrix[index]
        parts.append(np.array(fn(row)))  # a copy: fn may return a view of its buffers
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts)


@dataclass(frozen=True)
class Picked:
    """Positions (k,) into the pool's candidates, best first, with their scores (k,).

    ``all_scores`` (m,) holds every candidate's score for pointwise strategies, else None;
    ``select_s`` is the time spent ranking them (batch strategies interleave it with scoring).
    """

    positions: npt.NDArray[np.intp]
    scores: Scores
    all_scores: Scores | None = None
    select_s: float = 0.0
    rescored: int = 0  # float16: candidates re-scored from their float32 rows
    rescore_s: float = 0.0  # ... and the seconds that took (reading the rows included)


class Strategy(ABC):
    """One query strategy. ``needs_model``: it needs a classifier fitted on 2+ classes."""

    name: ClassVar[str]
    needs_model: ClassVar[bool] = True
    decomposable: ClassVar[bool] = True
    min_labels: ClassVar[int] = 0

    def unusable_reason(self, labels: npt.NDArray[np.int32]) -> str:
        """Why this strategy cannot run on these labels, or "" if it can."""
        classes = np.unique(labels)
        if self.needs_model and len(classes) < 2:
            have = (
                "there are no labels yet"
                if not len(labels)
                else f"all labels are class {classes[0]}"
            )
            return f"{self.name} needs a model fitted on labels of at least two classes and {have}"
        if len(labels) < self.min_labels:
            return f"{self.name} needs at least {self.min_labels} labels, got {len(labels)}"
        return ""

    def check(self, classifier_kind: str, mc_samples: int) -> None:  # noqa: B027 (optional hook)
        """Raise InvalidArgumentError if this strategy cannot work with these settings.

        Most strategies work with any classifier, so the default accepts everything.
        """

    @abstractmethod
    def select(self, pool: Pool, k: int) -> Picked:
        """The k best candidates of `pool` (1 <= k <= m), deterministic given pool.seed."""


class PointwiseStrategy(Strategy):
    """Scores each candidate on its own; selects the top k by (score, seeded id hash).

    The top k and its order do not depend on how the pool was chunked or sharded: the
    candidates that could reach the top k are scored again one row at a time (`settle`).
    """

    exact_scores: ClassVar[bool] = False  # scores involve no BLAS product: no re-scoring

    @abstractmethod
    def scores(self, pool: Pool) -> Scores:
        """A score per candidate (m,) float32, higher = more informative."""

    def settle(self, pool: Pool, scores: Scores, k: int) -> Scores:
        """scores (m,) with every candidate that could reach the top k scored again alone.

        BLAS may round a row's score differently by its place in a chunk (the pool's, a
        shard's, a candidate subset's). Those differences are below SCORE_SLACK, so the
        top k by one-row scores lies among the candidates within twice that of the k-th
        chunked score; they get their one-row score (`Pool.map_each_row`), which depends
        on the row alone. Top k and order are then the same however the pool was split.
        Unless over MAX_SETTLE_ROWS candidates are that close (a nearly flat model): their
        chunked scores are kept, and near-ties may then swap between chunkings.
        """
        if self.exact_scores:
            return scores
        keys = np.where(np.isnan(scores), -np.inf, scores)
        kth = float(np.partition(keys, len(keys) - k)[len(keys) - k])
        if not np.isfinite(kth):
            return scores
        near = np.flatnonzero(keys >= kth - 2 * SCORE_SLACK * max(1.0, abs(kth)))
        if len(near) > MAX_SETTLE_ROWS:
            return scores
        alone = replace(pool, rows=pool.rows[near], ids=pool.ids[near], row_by_row=True)
        settled = scores.copy()
        settled[near] = self.scores(alone)
        return settled

    def select(self, pool: Pool, k: int) -> Picked:
        scores = self.settle(pool, self.scores(pool), k)
        start = time.perf_counter()
        top = top_k(scores, pool.ids, k, pool.seed)
        select_s = time.perf_counter() - start
        return Picked(positions=top, scores=scores[top], all_scores=scores, select_s=select_s)

    def select_balanced(self, pool: Pool, k: int) -> Picked:
        """The k picks spread over the model's predicted classes (`balanced_top_k`).

        Needs ``pool.model`` (fitted even for strategies that score without one). The
        scores are not settled one row at a time: near-ties may differ between chunkings.
        """
        model = pool.model
        assert model is not None, "class-balanced selection runs only with a fitted model"
        scores = self.scores(pool)
        classes = pool.map_rows(lambda x: model.predict_proba(x).argmax(axis=1).astype(np.float32))
        start = time.perf_counter()
        top = balanced_top_k(scores, classes.astype(np.int64), pool.ids, k, pool.seed)
        select_s = time.perf_counter() - start
        return Picked(positions=top, scores=scores[top], all_scores=scores, select_s=select_s)


def balanced_top_k(
    scores: Scores, classes: npt.NDArray[np.int64], ids: npt.NDArray[np.int64], k: int, seed: int
) -> npt.NDArray[np.intp]:
    """Positions of k of the candidates (m,), round-robin over their classes (m,).

    Each class's candidates are ranked by `top_k` (score, then seeded id hash); the classes
    take turns in the order of their best candidate, each giving its best remaining one; a
    class out of candidates gives its turn away. 1 <= k <= m.
    """
    ranked: list[npt.NDArray[np.intp]] = []
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        ranked.append(members[top_k(scores[members], ids[members], min(k, len(members)), seed)])
    leaders = np.array([r[0] for r in ranked], dtype=np.intp)
    class_rank = np.empty(len(ranked), dtype=np.intp)
    class_rank[top_k(scores[leaders], ids[leaders], len(leaders), seed)] = np.arange(len(ranked))
    positions = np.concatenate(ranked)
    turn = np.concatenate([np.arange(len(r)) for r in ranked])
    rank = np.concatenate([np.full(len(r), class_rank[i]) for i, r in enumerate(ranked)])
    return positions[np.lexsort((rank, turn))[:k]]


def linear_scorer(model: ProxyClassifier | None, name: str) -> kernel.LinearScorer | None:
    """The kernel's scorer of strategy `name` for a logistic-regression model, else None."""
    if not isinstance(model, LogisticRegressionProxy) or name not in kernel.KINDS:
        return None
    return kernel.LinearScorer(
        np.ascontiguousarray(model.coef_, dtype=np.float32),
        np.ascontiguousarray(model.intercept_, dtype=np.float32),
        name,
    )


class ProbaStrategy(PointwiseStrategy):
    """A pointwise score computed from the model's class probabilities, chunk by chunk.

    With the logistic-regression proxy, least confidence, margin and entropy run on the
    scoring kernel (`kernel.scan`): one pass that keeps only the candidates that could
    reach the top k, which are then scored again alone (float32 matrix) or from their
    float32 rows (float16 matrix), so the picks and their scores are float32's.
    """

    @abstractmethod
    def from_proba(self, proba: Matrix) -> Scores:
        """Probabilities (b, C) -> scores (b,) float32."""

    def scores(self, pool: Pool) -> Scores:
        model = pool.model
        assert model is not None, f"{self.name} runs only with a fitted model"
        scorer = linear_scorer(model, self.name)
        if scorer is not None:
            return pool.map_rows(scorer)
        return pool.map_rows(lambda x: self.from_proba(model.predict_proba(x)))

    def select(self, pool: Pool, k: int) -> Picked:
        scorer = linear_scorer(pool.model, self.name)
        if scorer is None:
            return super().select(pool, k)
        return kernel_select(scorer, pool, k) or super().select(pool, k)


def kernel_select(scorer: kernel.LinearScorer, pool: Pool, k: int) -> Picked | None:
    """The top k of `pool` by the kernel; None if fewer than k candidates have a score.

    Every survivor of the scan (a candidate whose score, within its error bound, could
    reach the top k) is scored again one row at a time: from the matrix (float32), or from
    its float32 row (float16). The top k of those exact scores is float32's answer, as
    the rest cannot reach it. Above MAX_SETTLE_ROWS survivors, a float32 pool keeps the
    scanned scores (as `settle`) and a float16 one re-scores their rows in blocks.
    """
    half = pool.vectors.dtype == np.float16
    if half:
        assert pool.norms is not None, "a float16 pool comes with its rows' norms"
        error, norms = kernel.Float16Error.of(scorer, pool.vectors.shape[1]), pool.norms

        def bound(rows: Rows, scores: Scores) -> Scores:
            return error(norms[rows])
    else:

        def bound(rows: Rows, scores: Scores) -> Scores:
            return (SCORE_SLACK * np.maximum(1.0, np.abs(scores))).astype(np.float32)

    found = kernel.scan(pool.vectors, pool.rows, scorer, k, bound, pool.threads, pool.keep_scores)
    if len(found.positions) < k:
        return None
    start = time.perf_counter()
    rows = pool.rows[found.positions]
    few = len(rows) <= MAX_SETTLE_ROWS
    if half:
        exact_rows = pool.exact(rows)
        exact = each_row(exact_rows, np.arange(len(rows)), scorer) if few else scorer(exact_rows)
    else:
        exact = each_row(pool.vectors, rows, scorer) if few else found.scores
    rescore_s = time.perf_counter() - start
    top = top_k(exact, pool.ids[found.positions], k, pool.seed)
    if found.all_scores is not None:
        found.all_scores[found.positions] = exact
    return Picked(
        positions=found.positions[top],
        scores=exact[top],
        all_scores=found.all_scores,
        select_s=time.perf_counter() - start - rescore_s,
        rescored=len(rows) if half else 0,
        rescore_s=rescore_s if half else 0.0,
    )


class RandomStrategy(PointwiseStrategy):
    """A uniform random sample: each id's score is a hash of (seed, id)."""

    name: ClassVar[str] = "random"
    needs_model: ClassVar[bool] = False
    exact_scores: ClassVar[bool] = True

    def scores(self, pool: Pool) -> Scores:
        return id_uniform(pool.ids, pool.seed)


class LeastConfidence(ProbaStrategy):
    """1 - max_c p(c | x): the model's least confident predictions first."""

    name: ClassVar[str] = "least_confidence"

    def from_proba(self, proba: Matrix) -> Scores:
        return uncertainty.least_confidence(proba)


class Margin(ProbaStrategy):
    """-(p1 - p2), the gap between the two most probable classes: smallest gaps first."""

    name: ClassVar[str] = "margin"

    def from_proba(self, proba: Matrix) -> Scores:
        return uncertainty.margin(proba)


def _row_norms(x: Matrix) -> Scores:
    """Squared Euclidean norm of each row: (b, d) -> (b,) float32."""
    return np.einsum("ij,ij->i", x, x)


_entropy = uncertainty.entropy  # -sum_c p log p over the last axis: (..., C) -> (...)


class Entropy(ProbaStrategy):
    """-sum_c p log p: the most uncertain class distributions first."""

    name: ClassVar[str] = "entropy"

    def from_proba(self, proba: Matrix) -> Scores:
        return _entropy(proba)


class BALD(PointwiseStrategy):
    """Mutual information between the label and the model (Houlsby et al., 2011).

    H(mean_t p_t) - mean_t H(p_t) over T MC-dropout networks of the MLP proxy. The T dropout
    masks are drawn once per request from the seed and shared by every row, i.e. T sampled
    networks score the whole pool, so a row's score does not depend on its shard.
    """

    name: ClassVar[str] = "bald"

    def check(self, classifier_kind: str, mc_samples: int) -> None:
        if classifier_kind != MLP:
            raise InvalidArgumentError(
                f"strategy 'bald' needs MC-dropout samples but classifier.kind is "
                f"{classifier_kind!r}; set classifier.kind to 'mlp'"
            )
        if not 1 <= mc_samples <= MAX_MC_SAMPLES:
            raise InvalidArgumentError(
                f"mc_samples must be in [1, {MAX_MC_SAMPLES}] (0 means {DEFAULT_MC_SAMPLES}), "
                f"got {mc_samples}"
            )

    def scores(self, pool: Pool) -> Scores:
        model = pool.model
        assert isinstance(model, MLPProxy), "check() lets bald run only with the MLP proxy"

        def mutual_information(x: Matrix) -> Scores:
            samples = model.predict_proba_mc(x, pool.mc_samples, pool.seed)  # (T, b, C)
            return _entropy(samples.mean(axis=0)) - _entropy(samples).mean(axis=0)

        return pool.map_rows(mutual_information)


class Mahalanobis(PointwiseStrategy):
    """Distance to the nearest labeled class under class-conditional Gaussians.

    Class means come from the labeled embeddings; the shared covariance is the Ledoit-Wolf
    estimate of the within-class residuals. Score = min_c (x - mu_c)^T S^-1 (x - mu_c): the
    candidates least like anything labeled so far come first. Needs no classifier.
    """

    name: ClassVar[str] = "mahalanobis"
    needs_model: ClassVar[bool] = False
    min_labels: ClassVar[int] = 2

    def scores(self, pool: Pool) -> Scores:
        x = pool.vectors[pool.train_rows].astype(np.float64)
        classes, inverse = np.unique(pool.labels, return_inverse=True)
        means = np.stack([x[inverse == c].mean(axis=0) for c in range(len(classes))])
        covariance = LedoitWolf(assume_centered=True).fit(x - means[inverse]).covariance_
        ridge = 1e-6 * max(np.trace(covariance) / len(covariance), 1e-12)
        covariance[np.diag_indices_from(covariance)] += ridge
        # S^-1 = W W^T with W = inv(chol(S))^T, so (x - mu)^T S^-1 (x - mu) = |(x - mu) W|^2.
        whiten = np.linalg.inv(np.linalg.cholesky(covariance)).T.astype(np.float32)
        centers = (means @ whiten).astype(np.float32)  # (c, d)
        center_sq = (centers**2).sum(axis=1)

        def min_distance(v: Matrix) -> Scores:
            z = v @ whiten
            sq = (z**2).sum(axis=1, keepdims=True) - 2 * z @ centers.T + center_sq
            return np.maximum(sq.min(axis=1), 0.0).astype(np.float32)

        return pool.map_rows(min_distance)


class CoreSet(Strategy):
    """Greedy k-center (Sener and Savarese, 2018) in Euclidean embedding space.

    Each pick is the candidate farthest from the labeled set and the earlier picks; its
    score is that distance. With no labels the first pick is the candidate with the
    highest seeded id hash. One pass over the candidates per pick, plus one chunked
    candidates x labeled distance pass at the start.
    """

    name: ClassVar[str] = "coreset"
    needs_model: ClassVar[bool] = False
    decomposable: ClassVar[bool] = False

    def select(self, pool: Pool, k: int) -> Picked:
        matrix, positions = pool.candidate_matrix()
        labeled = pool.vectors[pool.train_rows]
        labeled_sq = (labeled**2).sum(axis=1)

        def nearest_labeled(x: Matrix) -> Scores:
            sq = x @ labeled.T  # (b, n): the one temporary of the chunk, updated in place
            sq *= -2.0
            sq += labeled_sq
            nearest = sq.min(axis=1)
            nearest += _row_norms(x)
            return np.maximum(nearest, 0.0, out=nearest)

        if len(labeled):
            nearest = pool.map_rows(nearest_labeled)
        else:
            nearest = np.full(len(positions), np.inf, dtype=np.float32)
        tie = id_uniform(pool.ids, pool.seed)
        norms = pool.map_rows(_row_norms)
        picks = np.empty(k, dtype=np.intp)
        scores = np.empty(k, dtype=np.float32)
        for step in range(k):
            pool.check_deadline(step, k)
            best = int(top_k(nearest if len(labeled) or step else tie, pool.ids, 1, pool.seed)[0])
            picks[step], scores[step] = best, nearest[best]
            center = matrix[positions[best]]
            sq = norms - 2 * pool.matvec(matrix, center)[positions] + norms[best]
            np.minimum(nearest, np.maximum(sq, 0.0), out=nearest)
            nearest[best] = -np.inf
        return Picked(positions=picks, scores=np.sqrt(np.maximum(scores, 0.0)))


class Badge(Strategy):
    """BADGE (Ash et al., 2020): k-means++ seeding on gradient embeddings, factorised.

    A candidate's gradient embedding is g = a (x) h, the outer product of a = p - onehot(argmax
    p) (C,) and the features h the last layer sees (the embedding for logistic regression,
    the hidden layer for the MLP). Since <g_i, g_j> = (a_i . a_j)(h_i . h_j), squared
    distances to a center need only an (m, C) and an (m, d) matrix-vector product; the
    (m, C x d) embedding is never built, which is why scikit-learn's kmeans_plusplus (it
    takes the dense matrix) is not used. As in BADGE, the first center is the largest
    gradient norm and each next one is drawn with probability proportional to D^2; a
    pick's score is its D^2 when drawn.
    """

    name: ClassVar[str] = "badge"
    decomposable: ClassVar[bool] = False

    def select(self, pool: Pool, k: int) -> Picked:
        model = pool.model
        assert model is not None, "badge runs only with a fitted model"
        if isinstance(model, MLPProxy):
            features: Matrix = pool.map_rows(model.hidden_features)
            positions: Rows = np.arange(len(pool.rows))
        else:
            features, positions = pool.candidate_matrix()
        proba = pool.map_rows(model.predict_proba)  # (m, C)
        proba[np.arange(len(proba)), proba.argmax(axis=1)] -= 1.0  # a = p - onehot
        h_sq = pool.map_rows(_row_norms) if features is pool.vectors else _row_norms(features)
        g_sq = (proba**2).sum(axis=1) * h_sq
        rng = np.random.default_rng(pool.seed)
        picks = np.empty(k, dtype=np.intp)
        scores = np.empty(k, dtype=np.float32)
        d2 = np.full(len(proba), np.inf, dtype=np.float32)  # squared distance to the centers
        picked = np.zeros(len(proba), dtype=bool)
        for step in range(k):
            pool.check_deadline(step, k)
            total = float(d2.sum(dtype=np.float64))
            if step == 0:
                best = int(top_k(g_sq, pool.ids, 1, pool.seed)[0])
            elif total > 0:
                best = int(rng.choice(len(d2), p=d2.astype(np.float64) / total))
            else:  # every candidate coincides with a center: take the next unpicked by hash
                unpicked = np.where(picked, -np.inf, 0.0).astype(np.float32)
                best = int(top_k(unpicked, pool.ids, 1, pool.seed)[0])
            picks[step], scores[step] = best, g_sq[best] if step == 0 else d2[best]
            picked[best] = True
            h_dot = pool.matvec(features, features[positions[best]])[positions]
            sq = g_sq - 2 * (proba @ proba[best]) * h_dot + g_sq[best]
            np.minimum(d2, np.maximum(sq, 0.0), out=d2)
            d2[picked] = 0.0
        return Picked(positions=picks, scores=scores)


class KMeansInitial(Strategy):
    """A diverse first batch: k-means centres of the candidates, the nearest real one to each.

    Used while the proxy cannot be fitted (``SelectRequest.initial = "kmeans"``). k-means
    (scikit-learn, k-means++ seeded by the request seed, one init) runs on the candidates'
    embeddings, or on a seeded sample of KMEANS_SAMPLE of them (by id hash) when there are
    more. With labels already (all of one class), min(labels, k) extra centres are fitted
    and those nearest a labeled example dropped, so the batch moves away from what is
    labeled. Each centre, largest cluster first, takes its nearest candidate not taken yet
    (k distinct candidates); a pick's score is its cluster's share of the clustered rows.
    """

    name: ClassVar[str] = "kmeans"
    needs_model: ClassVar[bool] = False
    decomposable: ClassVar[bool] = False

    def select(self, pool: Pool, k: int) -> Picked:
        sample = np.arange(len(pool.rows))
        if len(sample) > max(KMEANS_SAMPLE, k):
            hashed = id_uniform(pool.ids, pool.seed)
            sample = np.sort(top_k(hashed, pool.ids, max(KMEANS_SAMPLE, k), pool.seed))
        x = pool.exact(pool.rows[sample])  # (s, d) float32
        labeled = pool.exact(pool.train_rows)  # (n, d)
        extra = min(len(labeled), k, len(sample) - k)
        with warnings.catch_warnings():  # fewer distinct rows than centres: still k picks
            warnings.simplefilter("ignore", ConvergenceWarning)
            kmeans = KMeans(
                n_clusters=k + extra,
                init="k-means++",
                n_init=1,
                max_iter=KMEANS_MAX_ITER,
                random_state=pool.seed % 2**32,
            ).fit(x)
        centres = kmeans.cluster_centers_.astype(np.float32)  # (k + extra, d)
        sizes = np.bincount(kmeans.labels_, minlength=len(centres)).astype(np.float32)
        if extra:
            away = _squared_distances(centres, labeled).min(axis=1)
            keep = np.sort(np.argsort(-away, kind="stable")[:k])
            centres, sizes = centres[keep], sizes[keep]
        order = np.argsort(-sizes, kind="stable")
        distances = _squared_distances(x, centres[order])  # (s, k)
        taken = np.zeros(len(sample), dtype=bool)
        picks = np.empty(k, dtype=np.intp)
        for step in range(k):
            pool.check_deadline(step, k)
            column = np.where(taken, np.inf, distances[:, step])
            best = int(np.argmin(column))
            picks[step], taken[best] = best, True
        scores = (sizes[order] / len(sample)).astype(np.float32)
        return Picked(positions=sample[picks], scores=scores)


def _squared_distances(a: Matrix, b: Matrix) -> Matrix:
    """Squared Euclidean distances between the rows of a (p, d) and b (q, d): (p, q)."""
    sq = _row_norms(a)[:, None] - 2 * a @ b.T + _row_norms(b)[None, :]
    return np.maximum(sq, 0.0)


KMEANS_INITIAL = KMeansInitial()

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        RandomStrategy(),
        LeastConfidence(),
        Margin(),
        Entropy(),
        BALD(),
        Mahalanobis(),
        CoreSet(),
        Badge(),
    )
}


def get_strategy(name: str) -> Strategy:
    """The strategy called `name` ("" = margin, the default); InvalidArgumentError if unknown."""
    try:
        return STRATEGIES[name or DEFAULT_STRATEGY]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}"
        ) from None


def fallback_for(strategy: Strategy, initial: str = "") -> Strategy:
    """What runs when `strategy` cannot yet: k-means if `initial` is "kmeans", else core-set
    for BADGE (diversity), else random."""
    if initial == KMeansInitial.name:
        return KMEANS_INITIAL
    return STRATEGIES[CoreSet.name if isinstance(strategy, Badge) else RandomStrategy.name]
