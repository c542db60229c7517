"""Proxy Select speed and memory, side by side in one run: proxal, the floor and small-text.

    .venv/bin/python bench/proxy.py [--quick] [--out bench/results/proxy.json]

Runs the proxy's domain code (proxal.proxy_service.selection.select) in-process on synthetic
Gaussian class clusters (d = 384, float32), with BLAS limited to one thread and scoring on
`--threads` threads, as the service does. Rows (issue 4):

- floor: one read pass over the N x d float32 matrix (a gemv and a column sum, best of 3);
- LC 1M: fit + score + select with least confidence (logreg, k = 100, 2,000 labels, 4
  classes), median of 3 fresh seeds, as a multiple of the floor; target <= 1.5x the floor;
- LC 1M float16: the same with the matrix held in float16 (proxy_service/kernel.py) and the
  survivors re-scored from float32 rows; target <= 0.75x the float32 floor with the same ids
  and scores as float32 (the bench's float32 rows come from RAM; the service reads them with
  Lance take through ExactRows);
- int8 study: rows quantized with a per-row scale, scored by a numba loop like the kernel's:
  the pass's time, its bytes, the top-k overlap with float32 without re-score, and how many
  candidates an exact re-score would need under int8's error bound;
- core-set and BADGE 100K: seconds (target <= 5 s) and peak traced memory over the
  embedding matrix (target <= 2x, the matrix included; an extra full copy is 2.0x);
- the same work done with small-text (`pip install .[bench]`) on the same embeddings and
  labels, the way its docs intend (PoolBasedActiveLearner, SklearnClassifier around
  LogisticRegression, LeastConfidence / GreedyCoreset / BADGE), with the time ratio and the
  overlap of the chosen ids; its rows are skipped when small-text is not installed;
- UPS: a simulated loop (oracle = the synthetic classes) that re-scores only a subsample
  on most rounds, compared round by round with a full-pool selection from the same labels;
- the former bench/proxy_select.py cases: 10K/100K pools, 77 classes, 1 and 2 threads.

Prints a table and writes JSON. `--quick` shrinks every size (a smoke test in seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import threadpoolctl
from proxal.proxy_service import kernel
from proxal.proxy_service.cache import LoadedVersion, to_float16
from proxal.proxy_service.classifiers import (
    DEFAULT_C,
    DEFAULT_MAX_ITER,
    LogisticRegressionProxy,
)
from proxal.proxy_service.rows import ExactRows
from proxal.proxy_service.selection import (
    ModelCache,
    Query,
    SelectionResult,
    Subsampling,
    TrainingSet,
    select,
)
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import EncoderInfo, Store
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

DIM = 384
LC_FLOOR_TARGET = 1.5  # LC fit + score + select, float32: at most this many floors
HALF_FLOOR_TARGET = 0.75  # the same with the float16 matrix, in float32 floors
SMALL_TEXT_TARGET = 0.25  # proxal LC time / small-text LC time
BATCH_TARGET_S = 5.0
MEMORY_TARGET = 2.0  # peak (matrix included) / matrix bytes
CENTER_SCALE = 0.15  # class centers ~ N(0, 0.15^2) per dimension, unit noise: classes overlap


@dataclass(frozen=True)
class Sizes:
    big: int = 1_000_000
    mid: int = 100_000
    labels: int = 2_000
    classes: int = 4
    k: int = 100
    repeats: int = 3
    ups_pool: int = 100_000
    ups_rounds: int = 10
    ups_gamma: float = 0.1
    ups_temperature: float = 0.01
    ups_full_every: int = 5
    # small-text's greedy core-set recomputes every candidate's distance to every labeled
    # point on each pick (about 10 s per pick at 100K here): run this many, extrapolate to k.
    small_text_coreset_picks: int = 2
    legacy: tuple[tuple[int, int], ...] = ((10_000, 1_000), (100_000, 1_000), (100_000, 5_000))
    legacy_classes: int = 77
    take_pool: int = 200_000  # rows of the Lance version that ExactRows reads from
    take_counts: tuple[int, ...] = (100, 1_000, 10_000)
    crossover: tuple[int, ...] = (100_000, 250_000, 500_000)


NOTES = [
    "proxal runs with BLAS limited to 1 thread and scores on `threads` threads (the service's "
    "setup); small-text runs with BLAS limited to `threads` threads, its way of using the cores.",
    "floor: min of a gemv (BLAS on `threads` threads) and a column sum over the whole matrix.",
    "peak_over_matrix: (matrix + peak bytes traced by tracemalloc during the call) / matrix; "
    "extra_copy_over_matrix is the same measure for one x.copy() (2.0 by construction).",
    "small-text LC: PoolBasedActiveLearner(SklearnClassifierFactory(LogisticRegression(C=1, "
    "max_iter=200)), LeastConfidence(), SklearnDataset); initialize_data (fit) + query(k).",
    "small-text core-set: GreedyCoreset(distance_metric='euclidean', normalize=False) through "
    "the learner (its classifier gets an embed() returning the pre-computed embeddings); only "
    "the query is timed. Each pick recomputes all candidate-to-(labeled+picked) distances "
    "(sklearn pairwise_distances in batches of 100 rows), so it runs "
    "small_text_coreset_picks picks and seconds is extrapolated linearly to k (an "
    "underestimate: each pick adds a center).",
    "small-text BADGE: small_text.integrations.pytorch.query_strategies.BADGE (needs torch "
    "importable, not a torch classifier) with the same logreg proxy; it builds the dense "
    "(m, C*d) float64 gradient embedding and runs sklearn kmeans_plusplus with an unseeded "
    "RandomState, so its picks are random and no overlap is reported.",
]

QUICK = Sizes(
    big=20_000,
    mid=5_000,
    labels=200,
    k=10,
    repeats=2,
    ups_pool=5_000,
    ups_rounds=5,
    ups_full_every=4,
    small_text_coreset_picks=2,
    legacy=((2_000, 200),),
    take_pool=5_000,
    take_counts=(10, 100),
    crossover=(5_000,),
)


# --- data ---------------------------------------------------------------------------------


def clusters(
    n: int, classes: int, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
    """Vectors (n, DIM) float32 around `classes` Gaussian centers, and their classes (n,)."""
    rng = np.random.default_rng(seed)
    centers = (CENTER_SCALE * rng.standard_normal((classes, DIM))).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = np.empty((n, DIM), dtype=np.float32)
    step = 65_536
    for start in range(0, n, step):
        stop = min(n, start + step)
        rng.standard_normal((stop - start, DIM), dtype=np.float32, out=x[start:stop])
        x[start:stop] += centers[y[start:stop]]
    return x, y


def version_of(vectors: npt.NDArray[np.float32], name: str) -> LoadedVersion:
    ids = np.arange(len(vectors), dtype=np.int64)
    return LoadedVersion(EmbeddingVersion("bench", name), ids, vectors)


def labeled(
    y: npt.NDArray[np.int32], n_labels: int, classes: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], TrainingSet]:
    """(rows, labels, TrainingSet) of `n_labels` random rows labeled with their true class."""
    rows = np.sort(np.random.default_rng(seed).choice(len(y), n_labels, replace=False))
    rows = rows.astype(np.int64)
    return rows, y[rows], TrainingSet(rows, y[rows], classes)


# --- measuring ----------------------------------------------------------------------------


def best_s(fn: Callable[[], object], repeats: int = 3) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return min(runs)


def traced_peak(fn: Callable[[], object]) -> int:
    """Peak bytes traced (numpy buffers included) while fn runs, over what was live before."""
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def overlap(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    a_set, b_set = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    return len(a_set & b_set) / max(len(a_set), 1)


def run_select(version: LoadedVersion, query: Query, threads: int) -> tuple[float, SelectionResult]:
    """(wall seconds, result) of one selection with a fresh model cache (no cached fit)."""
    start = time.perf_counter()
    result = select(lambda: version, ModelCache(1), query, threads=threads)
    return time.perf_counter() - start, result


def median_select(
    version: LoadedVersion, make: Callable[[int], Query], repeats: int, threads: int
) -> tuple[float, SelectionResult, list[float]]:
    """The median of `repeats` selections, each with a fresh seed: (seconds, result, all)."""
    runs = [run_select(version, make(seed), threads) for seed in range(repeats)]
    ordered = sorted(runs, key=lambda r: r[0])
    total, result = ordered[len(ordered) // 2]
    return total, result, [r[0] for r in runs]


def lc_row(
    name: str, pool: int, sizes: Sizes, threads: int, runs_s: list[float], floor_s: float
) -> dict[str, Any]:
    """The fields every proxal LC-1M row has: the work, its median of runs_s and x floor."""
    total = sorted(runs_s)[len(runs_s) // 2]
    return {
        "name": name,
        "impl": "proxal",
        "pool": pool,
        "labels": sizes.labels,
        "classes": sizes.classes,
        "k": sizes.k,
        "threads": threads,
        "seconds": total,
        "runs_s": runs_s,
        "floor_multiple": total / floor_s,
    }


def phases(result: SelectionResult) -> dict[str, float]:
    """The phase split; rescore_s (float16 survivors from float32 rows) is part of score_s."""
    t = result.timings
    return {
        "load_s": t.load_s,
        "fit_s": t.fit_s,
        "score_s": t.score_s,
        "select_s": t.select_s,
        "rescore_s": t.rescore_s,
        "rescored": result.rescored,
        "precision": result.precision,
    }


def machine() -> dict[str, Any]:
    """The CPU (model name, the SIMD flags that matter here) and the BLAS kernel in use."""
    cpu, flags = platform.processor(), set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    blas = [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for i in threadpoolctl.threadpool_info()
        if i.get("user_api") == "blas"
    ]
    simd = sorted(flags & {"avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile"})
    return {"cpu": cpu, "simd": simd, "blas": blas, "numba": numba.__version__}


def warm_up(x: npt.NDArray[np.float32], make: Callable[[int], Query], threads: int) -> None:
    """One untimed selection per precision on the first rows: numba compiles (or loads
    its cache) and thread pools start before anything is timed."""
    head = x[: min(len(x), 3 * kernel.BLOCK_ROWS)]
    half, norms = to_float16(head)
    ids = np.arange(len(head), dtype=np.int64)
    for loaded in (
        version_of(head, "warm"),
        LoadedVersion(EmbeddingVersion("bench", "warm16"), ids, half, norms, lambda i: head[i]),
    ):
        training = make(0).training
        keep = training.ids < len(head)
        small = TrainingSet(training.ids[keep], training.labels[keep], training.num_classes)
        run_select(loaded, replace(make(0), training=small, k=1), threads)


def lc_half_row(
    x: npt.NDArray[np.float32],
    make: Callable[[int], Query],
    full: list[tuple[float, SelectionResult]],
    sizes: Sizes,
    threads: int,
    floor_s: float,
) -> dict[str, Any]:
    """LC with the matrix held in float16: the same seeds as the float32 runs `full`."""
    half, norms = to_float16(x)
    ids = np.arange(len(x), dtype=np.int64)
    version = LoadedVersion(
        EmbeddingVersion("bench", "big16"), ids, half, norms, exact_source=lambda i: x[i]
    )
    with threadpool_limits(limits=1, user_api="blas"):
        runs = [run_select(version, make(seed), threads) for seed in range(sizes.repeats)]
    pairs = [(h, f) for (_, h), (_, f) in zip(runs, full, strict=True)]
    same_ids = [bool(np.array_equal(h.ids, f.ids)) for h, f in pairs]
    same_scores = [bool(np.array_equal(h.scores, f.scores)) for h, f in pairs]
    total, result = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    return {
        **lc_row("lc_big_float16", len(x), sizes, threads, [r[0] for r in runs], floor_s),
        "matrix_bytes": half.nbytes,
        "overlap_with_float32": float(np.mean([overlap(h.ids, f.ids) for h, f in pairs])),
        "same_ids_as_float32": same_ids,
        "same_scores_as_float32": same_scores,
        "target_floor_multiple": HALF_FLOOR_TARGET,
        "meets_target": total / floor_s <= HALF_FLOOR_TARGET and all(same_ids),
        **phases(result),
    }


@numba.njit(nogil=True, fastmath=True)  # no cache: this script also runs as a test module
def _logits8(
    q: npt.NDArray[np.int8],
    scale: npt.NDArray[np.float32],
    wt: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
) -> None:  # pragma: no cover
    """out[c, i] = scale[i] (q[i] . wt[c]) + bias[c]: int8 rows (n, d), per-row scales (n,)."""
    n, d = q.shape
    for i in range(n):
        for c in range(wt.shape[0]):
            acc = np.float32(0.0)
            for j in range(d):
                acc += np.float32(q[i, j]) * wt[c, j]
            out[c, i] = acc * scale[i] + bias[c]


def int8_row(
    x: npt.NDArray[np.float32],
    train_rows: npt.NDArray[np.int64],
    train_labels: npt.NDArray[np.int32],
    sizes: Sizes,
    threads: int,
    floor_s: float,
) -> dict[str, Any]:
    """int8 with per-row scales (max |x_i| / 127): the score pass, its overlap with float32's
    top k, and the candidates an exact re-score would need under int8's error bound."""
    scale = (np.abs(x).max(axis=1) / 127).astype(np.float32)
    q = np.empty(x.shape, dtype=np.int8)
    for start in range(0, len(x), 65_536):
        block = slice(start, start + 65_536)
        q[block] = np.rint(x[block] / scale[block, None])
    model = LogisticRegressionProxy(C=DEFAULT_C, max_iter=DEFAULT_MAX_ITER).fit(
        x[train_rows], train_labels, sizes.classes
    )
    scorer = kernel.LinearScorer(model.coef_, model.intercept_, "least_confidence")
    bounds = np.linspace(0, len(x), threads + 1).astype(int)
    scores = np.empty(len(x), dtype=np.float32)

    def part(i: int) -> None:
        out = np.empty((len(scorer.coef), kernel.BLOCK_ROWS), dtype=np.float32)
        for lo in range(bounds[i], bounds[i + 1], kernel.BLOCK_ROWS):
            hi = min(bounds[i + 1], lo + kernel.BLOCK_ROWS)
            _logits8(q[lo:hi], scale[lo:hi], scorer.coef, scorer.intercept, out)
            scores[lo:hi] = kernel.scores_from_logits(scorer.kind, out[:, : hi - lo])

    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(part, range(threads)))

    run()
    seconds = best_s(run)
    exact = scorer(x)
    top8 = np.argsort(-scores, kind="stable")[: sizes.k]
    top32 = np.argsort(-exact, kind="stable")[: sizes.k]
    # |dx_j| <= scale_i / 2 per value, so ||dx|| <= scale_i sqrt(d) / 2: as Float16Error
    w_norm = float(np.sqrt((scorer.coef.astype(np.float64) ** 2).sum(axis=1)).max())
    bound = scorer.sensitivity() * w_norm * scale * np.sqrt(DIM) / 2 + 1e-5
    survivors = kernel.prune(np.arange(len(x)), scores, bound.astype(np.float32), sizes.k)[0]
    return {
        "name": "lc_big_int8_study",
        "impl": "numba",
        "pool": len(x),
        "k": sizes.k,
        "threads": threads,
        "seconds": seconds,
        "score_s": seconds,
        "floor_multiple": seconds / floor_s,
        "matrix_bytes": q.nbytes + scale.nbytes,
        "overlap_with_float32": overlap(top8, top32),
        "exact_rescore_candidates": len(survivors),
        "note": "score pass only, the LC model of lc_big; overlap: top k vs float32's, no re-score",
    }


def take_rows(x: npt.NDArray[np.float32], sizes: Sizes) -> dict[str, float]:
    """Seconds ExactRows (Lance take, cold LRU, id index read) takes per count of random ids
    from a version of `take_pool` rows in a local store: re-scoring's fixed cost."""
    n = min(sizes.take_pool, len(x))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        store.add_pool_rows("take", "train", [f"t{i}" for i in range(n)], ["c"] * n)
        with store.begin_embedding("take", EncoderInfo("bench", "none", DIM, 0)) as writer:
            writer.write(np.arange(n), x[:n])
            name = EmbeddingVersion("take", str(writer.commit().version))
        rng = np.random.default_rng(6)
        out = {}
        for count in sizes.take_counts:
            rows = ExactRows(store)
            rows.index(name)
            wanted = rng.choice(n, min(count, n), replace=False)
            start = time.perf_counter()
            got = rows.get(name, wanted)
            out[str(count)] = time.perf_counter() - start
            assert np.array_equal(got, x[wanted])
    return out


def crossover_rows(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int32], sizes: Sizes, threads: int
) -> list[dict[str, Any]]:
    """LC select, float32 vs float16 (float32 rows from RAM), by pool size: where float16's
    re-score (plus reading its rows from the store, `take_rows`) starts to pay."""
    out = []
    for n in sizes.crossover:
        part, labels = x[:n], y[:n]
        _, _, training = labeled(labels, min(sizes.labels, n // 10), sizes.classes, seed=7)
        half, norms = to_float16(part)
        ids = np.arange(n, dtype=np.int64)
        versions = {
            "float32": version_of(part, "cross"),
            "float16": LoadedVersion(
                EmbeddingVersion("bench", "cross16"), ids, half, norms, lambda i, p=part: p[i]
            ),
        }
        row: dict[str, Any] = {"name": f"lc_{n}", "pool": n}
        for precision, held in versions.items():
            with threadpool_limits(limits=1, user_api="blas"):
                total, result, _ = median_select(
                    held,
                    lambda seed, t=training: Query(t, "least_confidence", sizes.k, 7000 + seed),
                    sizes.repeats,
                    threads,
                )
            row[f"{precision}_s"] = total
            row[f"{precision}_score_s"] = result.timings.score_s
            row[f"{precision}_rescored"] = result.rescored
        out.append(row)
        del half, norms, versions
    return out


# --- small-text ---------------------------------------------------------------------------


def small_text_version() -> str | None:
    try:
        return version("small-text")
    except PackageNotFoundError:
        return None


def small_text_learner(
    dataset: Any, strategy: Any, classes: int, seed: int, embedding: bool = False
) -> Any:
    """A PoolBasedActiveLearner with SklearnClassifier(LogisticRegression) as proxal's logreg.

    `embedding`: the classifier also has the embed() that small-text's embedding strategies
    (GreedyCoreset, BADGE) call; for fixed pre-computed embeddings it returns the inputs.
    """
    from sklearn.base import clone
    from small_text import (
        AbstractClassifierFactory,
        PoolBasedActiveLearner,
        SklearnClassifier,
        SklearnClassifierFactory,
    )

    estimator = LogisticRegression(C=DEFAULT_C, max_iter=DEFAULT_MAX_ITER, random_state=seed)
    if not embedding:
        factory = SklearnClassifierFactory(estimator, classes)
        return PoolBasedActiveLearner(factory, strategy, dataset)

    class EmbeddingClassifier(SklearnClassifier):  # type: ignore[misc]
        def embed(self, data_set: Any, return_proba: bool = False, pbar: Any = None) -> Any:
            x = data_set.x
            return (x, self.model.predict_proba(x)) if return_proba else x

    class EmbeddingFactory(AbstractClassifierFactory):  # type: ignore[misc]
        def new(self) -> EmbeddingClassifier:
            return EmbeddingClassifier(clone(estimator), classes)

    return PoolBasedActiveLearner(EmbeddingFactory(), strategy, dataset)


def small_text_dataset(
    x: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], labels: Any, classes: int
) -> Any:
    from small_text import LABEL_UNLABELED, SklearnDataset

    y = np.full(len(x), LABEL_UNLABELED, dtype=np.int64)
    y[rows] = labels
    return SklearnDataset(x, y, target_labels=np.arange(classes))


# --- rows ---------------------------------------------------------------------------------


def floor_row(vectors: npt.NDArray[np.float32], threads: int) -> dict[str, Any]:
    w = np.ones(DIM, dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        gemv_s = best_s(lambda: vectors @ w)
    sum_s = best_s(lambda: vectors.sum(axis=0))
    return {
        "name": "floor",
        "impl": "numpy",
        "pool": len(vectors),
        "seconds": min(gemv_s, sum_s),
        "gemv_s": gemv_s,
        "column_sum_s": sum_s,
        "matrix_bytes": vectors.nbytes,
        "gb_per_s": vectors.nbytes / 1e9 / min(gemv_s, sum_s),
    }


def lc_rows(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int32], sizes: Sizes, threads: int, floor_s: float
) -> list[dict[str, Any]]:
    version = version_of(x, "big")
    rows, labels, training = labeled(y, sizes.labels, sizes.classes, seed=1)

    def make(seed: int) -> Query:
        return Query(training, "least_confidence", sizes.k, seed=1000 + seed)

    with threadpool_limits(limits=1, user_api="blas"):
        warm_up(x, make, threads)
        full = [run_select(version, make(seed), threads) for seed in range(sizes.repeats)]
    total, result = sorted(full, key=lambda r: r[0])[len(full) // 2]
    proxal = {
        **lc_row("lc_big", len(x), sizes, threads, [r[0] for r in full], floor_s),
        "target_floor_multiple": LC_FLOOR_TARGET,
        "meets_target": total / floor_s <= LC_FLOOR_TARGET,
        **phases(result),
    }
    half_row = lc_half_row(x, make, full, sizes, threads, floor_s)
    out = [proxal, half_row, int8_row(x, rows, labels, sizes, threads, floor_s)]
    if small_text_version() is None:
        return out
    from small_text import LeastConfidence

    dataset = small_text_dataset(x, rows, labels, sizes.classes)
    st_runs = []
    with threadpool_limits(limits=threads, user_api="blas"):  # its own way of using 2 cores
        for seed in range(sizes.repeats):
            learner = small_text_learner(dataset, LeastConfidence(), sizes.classes, 1000 + seed)
            start = time.perf_counter()
            learner.initialize_data(rows, labels)
            fitted = time.perf_counter()
            picked = learner.query(num_samples=sizes.k)
            done = time.perf_counter()
            st_runs.append((done - start, fitted - start, done - fitted, picked))
    st_total, st_fit, st_query, picked = sorted(st_runs, key=lambda r: r[0])[len(st_runs) // 2]
    proxal["small_text_ratio"] = total / st_total
    proxal["small_text_target_ratio"] = SMALL_TEXT_TARGET
    out.append(
        {
            "name": "lc_big",
            "impl": "small-text",
            "pool": len(x),
            "labels": sizes.labels,
            "k": sizes.k,
            "blas_threads": threads,
            "seconds": st_total,
            "runs_s": [r[0] for r in st_runs],
            "floor_multiple": st_total / floor_s,
            "fit_s": st_fit,
            "query_s": st_query,
            "overlap_with_proxal": overlap(picked, result.ids),
        }
    )
    return out


def batch_rows(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int32], sizes: Sizes, threads: int
) -> list[dict[str, Any]]:
    """Core-set and BADGE on the mid-size pool: time, peak memory, small-text alongside."""
    version = version_of(x, "mid")
    rows, labels, training = labeled(y, sizes.labels, sizes.classes, seed=2)
    matrix_bytes = x.nbytes
    copy_ratio = 1 + traced_peak(lambda: x.copy()) / matrix_bytes
    out: list[dict[str, Any]] = []
    have_small_text = small_text_version() is not None
    for strategy in ("coreset", "badge"):

        def make(seed: int, strategy: str = strategy) -> Query:
            return Query(training, strategy, sizes.k, seed=2000 + seed)

        with threadpool_limits(limits=1, user_api="blas"):
            total, result, runs = median_select(version, make, sizes.repeats, threads)
            extra = traced_peak(lambda make=make: run_select(version, make(0), threads))
        memory = 1 + extra / matrix_bytes
        row = {
            "name": f"{strategy}_mid",
            "impl": "proxal",
            "pool": len(x),
            "labels": sizes.labels,
            "k": sizes.k,
            "threads": threads,
            "seconds": total,
            "runs_s": runs,
            "target_s": BATCH_TARGET_S,
            "peak_over_matrix": memory,
            "extra_copy_over_matrix": copy_ratio,
            "memory_target": MEMORY_TARGET,
            "meets_target": total <= BATCH_TARGET_S and memory <= MEMORY_TARGET,
            **phases(result),
        }
        out.append(row)
        if have_small_text:
            st = small_text_batch(strategy, x, rows, labels, sizes, threads, result)
            row["small_text_ratio"] = total / st["seconds"]
            out.append(st)
    return out


def small_text_batch(
    strategy: str,
    x: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int32],
    sizes: Sizes,
    threads: int,
    proxal_result: SelectionResult,
) -> dict[str, Any]:
    from small_text import GreedyCoreset
    from small_text.integrations.pytorch.query_strategies import BADGE

    dataset = small_text_dataset(x, rows, labels, sizes.classes)
    row: dict[str, Any] = {
        "name": f"{strategy}_mid",
        "impl": "small-text",
        "pool": len(x),
        "labels": sizes.labels,
        "k": sizes.k,
        "blas_threads": threads,
    }
    with threadpool_limits(limits=threads, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if strategy == "coreset":
            # Euclidean on the raw embeddings, as proxal's core-set; the model is not used, so
            # only the query is timed. Its cost grows with each pick (one more center).
            picks = min(sizes.small_text_coreset_picks, sizes.k)
            learner = small_text_learner(
                dataset,
                GreedyCoreset(distance_metric="euclidean", normalize=False),
                sizes.classes,
                seed=2000,
                embedding=True,
            )
            learner.initialize_data(rows, labels)
            start = time.perf_counter()
            picked = learner.query(num_samples=picks)
            ran = time.perf_counter() - start
            row.update(
                picks_run=picks,
                picks_s=ran,
                seconds=ran * sizes.k / picks,
                extrapolated=picks < sizes.k,
                # greedy k-center is deterministic: the first picks should agree
                overlap_with_proxal=overlap(picked, proxal_result.ids[:picks]),
            )
        else:
            # BADGE lives in small-text's pytorch integration, but its sample() only needs
            # embeddings and class probabilities: the same logreg proxy works.
            np.random.seed(2000)
            learner = small_text_learner(
                dataset, BADGE(sizes.classes), sizes.classes, seed=2000, embedding=True
            )
            start = time.perf_counter()
            learner.initialize_data(rows, labels)
            fitted = time.perf_counter()
            learner.query(num_samples=sizes.k)
            done = time.perf_counter()
            learner = small_text_learner(
                dataset, BADGE(sizes.classes), sizes.classes, seed=2000, embedding=True
            )
            extra = traced_peak(
                lambda: (learner.initialize_data(rows, labels), learner.query(num_samples=sizes.k))
            )
            row.update(
                seconds=done - start,
                fit_s=fitted - start,
                query_s=done - fitted,
                peak_over_matrix=1 + extra / x.nbytes,
                overlap_with_proxal=None,  # k-means++ sampling: random in both
            )
    return row


def ups_rows(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int32], sizes: Sizes, threads: int
) -> dict[str, Any]:
    """A simulated loop that selects with UPS, each round next to a full-pool selection."""
    version = version_of(x, "ups")
    rows, labels, _ = labeled(y, sizes.labels, sizes.classes, seed=3)
    label_of = dict(zip(rows.tolist(), labels.tolist(), strict=True))
    prev_ids = np.zeros(0, np.int64)
    prev_scores = np.zeros(0, np.float32)
    rounds = []
    with threadpool_limits(limits=1, user_api="blas"):
        for step in range(sizes.ups_rounds):
            ids = np.fromiter(sorted(label_of), dtype=np.int64)
            training = TrainingSet(ids, y[ids], sizes.classes)
            seed = 3000 + step
            full_s, full = run_select(
                version,
                Query(training, "least_confidence", sizes.k, seed, return_scores=True),
                threads,
            )
            full_round = step < 2 or step % sizes.ups_full_every == 0
            record: dict[str, Any] = {
                "round": step,
                "labels": len(ids),
                "full_round": full_round,
                "full_s": full_s,
                "full_score_s": full.timings.score_s + full.timings.select_s,
                "full_candidates": full.n_candidates,
            }
            if full_round:
                chosen, scored_ids, scored = full.ids, full.scored_ids, full.scored_scores
            else:
                sub = Subsampling(sizes.ups_gamma, sizes.ups_temperature, prev_ids, prev_scores)
                query = Query(
                    training, "least_confidence", sizes.k, seed, subsampling=sub, return_scores=True
                )
                ups_s, ups = run_select(version, query, threads)
                chosen, scored_ids, scored = ups.ids, ups.scored_ids, ups.scored_scores
                record.update(
                    ups_s=ups_s,
                    ups_score_s=ups.timings.score_s + ups.timings.select_s,
                    ups_load_s=ups.timings.load_s,
                    full_load_s=full.timings.load_s,
                    ups_candidates=ups.n_candidates,
                    overlap=overlap(chosen, full.ids),
                )
            rounds.append(record)
            # the bench keeps the scores: fresh ones replace old ones, labeled ids drop out
            merged = dict(zip(prev_ids.tolist(), prev_scores.tolist(), strict=True))
            merged.update(zip(scored_ids.tolist(), scored.tolist(), strict=True))
            for i in chosen.tolist():
                label_of[i] = int(y[i])
                merged.pop(i, None)
            prev_ids = np.fromiter(merged, dtype=np.int64, count=len(merged))
            prev_scores = np.fromiter(merged.values(), dtype=np.float32, count=len(merged))
    ups = [r for r in rounds if not r["full_round"]]
    return {
        "pool": len(x),
        "k": sizes.k,
        "gamma": sizes.ups_gamma,
        "temperature": sizes.ups_temperature,
        "rounds": rounds,
        "ups_rounds": len(ups),
        "mean_overlap": float(np.mean([r["overlap"] for r in ups])) if ups else None,
        "mean_rescored_fraction": (
            float(np.mean([r["ups_candidates"] / r["full_candidates"] for r in ups]))
            if ups
            else None
        ),
        "score_s_full": float(np.sum([r["full_score_s"] for r in ups])),
        "score_s_ups": float(np.sum([r["ups_score_s"] for r in ups])),
        "total_s_full": float(np.sum([r["full_s"] for r in ups])),
        "total_s_ups": float(np.sum([r["ups_s"] for r in ups])),
    }


def legacy_rows(sizes: Sizes, threads: int) -> list[dict[str, Any]]:
    """bench/proxy_select.py's cases: 77 classes, least confidence, 1 and `threads` threads."""
    out = []
    for n, n_labels in sizes.legacy:
        x, y = clusters(n, sizes.legacy_classes, seed=4)
        version = version_of(x, "legacy")
        _, _, training = labeled(y, n_labels, sizes.legacy_classes, seed=4)
        for t in sorted({1, threads}):
            with threadpool_limits(limits=1, user_api="blas"):
                total, result, runs = median_select(
                    version,
                    lambda seed, training=training: Query(
                        training, "least_confidence", sizes.k, seed=4000 + seed
                    ),
                    sizes.repeats,
                    t,
                )
            out.append(
                {
                    "name": f"lc_{n}_{n_labels}_77c",
                    "impl": "proxal",
                    "pool": n,
                    "labels": n_labels,
                    "classes": sizes.legacy_classes,
                    "k": sizes.k,
                    "threads": t,
                    "seconds": total,
                    "runs_s": runs,
                    **phases(result),
                }
            )
    return out


# --- output -------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    """value formatted by spec, or "-" right-aligned to the same width when missing."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return f"{'-':>{width}}" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], ups: dict[str, Any]) -> None:
    header = (
        f"{'row':<18} {'impl':<10} {'pool':>8} {'thr':>3} {'seconds':>8} {'x floor':>7} "
        f"{'fit s':>6} {'score s':>7} {'rescore':>7} {'select':>6} {'peak/mat':>8} "
        f"{'vs s-t':>6} {'overlap':>7} {'target':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        target = r.get("meets_target")
        extra = " (extrapolated)" if r.get("extrapolated") else ""
        print(
            f"{r['name']:<18} {r['impl']:<10} {r['pool']:>8} "
            f"{_fmt(r.get('threads', r.get('blas_threads')), '>3')} {r['seconds']:>8.3f} "
            f"{_fmt(r.get('floor_multiple'), '>7.2f')} {_fmt(r.get('fit_s'), '>6.3f')} "
            f"{_fmt(r.get('score_s', r.get('query_s')), '>7.3f')} "
            f"{_fmt(r.get('rescore_s'), '>7.3f')} {_fmt(r.get('select_s'), '>6.3f')} "
            f"{_fmt(r.get('peak_over_matrix'), '>8.2f')} "
            f"{_fmt(r.get('small_text_ratio'), '>6.3f')} "
            f"{_fmt(r.get('overlap_with_proxal', r.get('overlap_with_float32')), '>7.2f')} "
            f"{'-' if target is None else ('pass' if target else 'FAIL'):>6}{extra}"
        )
    print(
        f"\nUPS ({ups['pool']} rows, k={ups['k']}, gamma={ups['gamma']}, T={ups['temperature']}, "
        f"{ups['ups_rounds']} UPS rounds of {len(ups['rounds'])}): "
        f"mean overlap with the full-pool selection {_fmt(ups['mean_overlap'], '.2f')}, "
        f"re-scored {_fmt(ups['mean_rescored_fraction'], '.3f')} of the pool, "
        f"score+select {ups['score_s_ups']:.3f} s vs {ups['score_s_full']:.3f} s full, "
        f"whole select {ups['total_s_ups']:.3f} s vs {ups['total_s_full']:.3f} s"
    )


def print_crossover(rows: list[dict[str, Any]], take: dict[str, float]) -> None:
    print("\nfloat16 crossover (LC select seconds; float16's float32 rows from RAM here):")
    for r in rows:
        print(
            f"  {r['pool']:>8} rows: float32 {r['float32_s']:.3f} s, "
            f"float16 {r['float16_s']:.3f} s ({r['float16_rescored']} re-scored)"
        )
    print(
        "ExactRows (Lance take, cold) seconds by rows read: "
        + ", ".join(f"{k}: {v:.4f}" for k, v in take.items())
    )


def run(sizes: Sizes, threads: int) -> dict[str, Any]:
    x, y = clusters(sizes.big, sizes.classes, seed=0)
    floor = floor_row(x, threads)
    rows = [floor]
    rows += lc_rows(x, y, sizes, threads, floor["seconds"])
    crossover = crossover_rows(x, y, sizes, threads)
    take = take_rows(x, sizes)
    # the mid-size pool is a contiguous view of the big one's first rows
    rows += batch_rows(x[: sizes.mid], y[: sizes.mid], sizes, threads)
    ups = ups_rows(x[: sizes.ups_pool], y[: sizes.ups_pool], sizes, threads)
    del x, y
    gc.collect()
    rows += legacy_rows(sizes, threads)
    return {"rows": rows, "ups": ups, "crossover": crossover, "exact_rows_take_s": take}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/proxy.json"))
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--threads", type=int, default=2, help="scoring threads (cores)")
    parser.add_argument(
        "--small-text-coreset-picks",
        type=int,
        default=None,
        help="picks small-text's core-set runs before extrapolating to k (k: no extrapolation)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.small_text_coreset_picks is not None:
        sizes = replace(sizes, small_text_coreset_picks=args.small_text_coreset_picks)
    result = run(sizes, args.threads)
    hardware = machine()
    print(f"CPU {hardware['cpu']} ({', '.join(hardware['simd'])}); BLAS {hardware['blas']}")
    print_table(result["rows"], result["ups"])
    print_crossover(result["crossover"], result["exact_rows_take_s"])
    report = {
        "machine": platform.platform(),
        **hardware,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "small_text": small_text_version(),
        "dim": DIM,
        "quick": args.quick,
        "sizes": asdict(sizes),
        "notes": NOTES,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
