"""What the picks' predictions (`SelectResponse.predicted_labels`) cost a Select.

    .venv/bin/python bench/suggestions.py

A 100K x 384 synthetic pool (10 Gaussian clusters), 200 labels, k = 100, the
logistic-regression proxy, BLAS on one thread, in process. Prints, per strategy, the whole
Select, its fit (which `random` now pays too, for the predictions) and the predictions on
the k picks alone, each the median of ROUNDS runs with a fresh model cache.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from proxal.proxy_service.cache import LoadedVersion
from proxal.proxy_service.classifiers import ClassifierSpec
from proxal.proxy_service.selection import ModelCache, Query, TrainingSet, fit, select, suggest
from proxal.runtime.versions import EmbeddingVersion
from threadpoolctl import threadpool_limits

N, DIM, CLASSES, LABELS, K, ROUNDS = 100_000, 384, 10, 200, 100, 5


def main() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, CLASSES, N)
    vectors = (rng.normal(0, 1, (CLASSES, DIM))[truth] + rng.normal(size=(N, DIM))).astype(
        np.float32
    )
    version = LoadedVersion(EmbeddingVersion("p", "v1"), np.arange(N, dtype=np.int64), vectors)
    ids = np.arange(0, N, N // LABELS, dtype=np.int64)[:LABELS]
    training = TrainingSet(ids, truth[ids].astype(np.int32), CLASSES)
    print(f"{N} x {DIM}, {LABELS} labels, k = {K}; medians of {ROUNDS} runs (ms)")
    print("| strategy | Select | fit | predictions on the k picks |\n|---|---|---|---|")
    for strategy in ("margin", "random"):
        total, fitting, predictions = [], [], []
        for seed in range(ROUNDS):
            models = ModelCache(1)
            query = Query(training=training, strategy=strategy, k=K, seed=seed)
            start = time.perf_counter()
            result = select(lambda: version, models, query)
            total.append(time.perf_counter() - start)
            fitting.append(result.timings.fit_s)
            rows = version.rows(ids, "ids")  # the cached model Select fitted
            model = fit(version, models, training, rows, ClassifierSpec().resolved(), seed)
            start = time.perf_counter()
            suggest(model, vectors[result.ids])
            predictions.append(time.perf_counter() - start)
        row = [statistics.median(x) * 1000 for x in (total, fitting, predictions)]
        print(f"| {strategy} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.2f} |")


if __name__ == "__main__":
    with threadpool_limits(1):  # BLAS on one thread, as the service runs it
        main()
