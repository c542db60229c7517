"""Proxy Select speed and memory, side by side in one run: proxal, the floor and small-text.

    .venv/bin/python bench/proxy.py [--quick] [--out bench/results/proxy.json]

Runs the proxy's domain code (proxal.proxy_service.selection.select) in-process on synthetic
Gaussian class clusters (d = 384, float32), with BLAS limited to one thread and scoring on
`--threads` threads, as the service does. Rows (issue 4):

- floor: one read pass over the N x d matrix (a gemv and a column sum, best of 3);
- LC 1M: fit + score + select with least confidence (logreg, k = 100, 2,000 labels, 4
  classes), median of 3 fresh seeds, as a multiple of the floor; target <= 0.5 s;
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
import gc
import json
import os
import platform
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from proxal.proxy_service.cache import LoadedVersion
from proxal.proxy_service.classifiers import DEFAULT_C, DEFAULT_MAX_ITER
from proxal.proxy_service.selection import (
    ModelCache,
    Query,
    SelectionResult,
    Subsampling,
    TrainingSet,
    select,
)
from proxal.runtime.versions import EmbeddingVersion
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

DIM = 384
LC_TARGET_S = 0.5
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


def phases(result: SelectionResult) -> dict[str, float]:
    t = result.timings
    return {"load_s": t.load_s, "fit_s": t.fit_s, "score_s": t.score_s, "select_s": t.select_s}


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
        total, result, runs = median_select(version, make, sizes.repeats, threads)
    proxal = {
        "name": "lc_big",
        "impl": "proxal",
        "pool": len(x),
        "labels": sizes.labels,
        "classes": sizes.classes,
        "k": sizes.k,
        "threads": threads,
        "seconds": total,
        "runs_s": runs,
        "floor_multiple": total / floor_s,
        "target_s": LC_TARGET_S,
        "meets_target": total <= LC_TARGET_S,
        **phases(result),
    }
    out = [proxal]
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
        f"{'fit s':>6} {'score s':>7} {'peak/mat':>8} {'vs s-t':>6} {'overlap':>7} {'target':>6}"
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
            f"{_fmt(r.get('peak_over_matrix'), '>8.2f')} "
            f"{_fmt(r.get('small_text_ratio'), '>6.3f')} "
            f"{_fmt(r.get('overlap_with_proxal'), '>7.2f')} "
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


def run(sizes: Sizes, threads: int) -> dict[str, Any]:
    x, y = clusters(sizes.big, sizes.classes, seed=0)
    floor = floor_row(x, threads)
    rows = [floor]
    rows += lc_rows(x, y, sizes, threads, floor["seconds"])
    # the mid-size pool is a contiguous view of the big one's first rows
    rows += batch_rows(x[: sizes.mid], y[: sizes.mid], sizes, threads)
    ups = ups_rows(x[: sizes.ups_pool], y[: sizes.ups_pool], sizes, threads)
    del x, y
    gc.collect()
    rows += legacy_rows(sizes, threads)
    return {"rows": rows, "ups": ups}


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
    print_table(result["rows"], result["ups"])
    report = {
        "machine": platform.platform(),
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
