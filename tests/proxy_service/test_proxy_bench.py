"""One Select on a Banking77-sized problem: run with `pytest -m bench -s tests/proxy_service`."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from proxy_service.cache import LoadedVersion
from proxy_service.classifiers import ClassifierSpec
from proxy_service.selection import ModelCache, TrainingSet, select


@pytest.mark.bench
@pytest.mark.parametrize("blas_threads", [1, os.cpu_count() or 1], ids=["service", "all-cores"])
def test_select_least_confidence_10k_x_384_77_classes(blas_threads: int) -> None:
    rng = np.random.default_rng(0)
    ids = np.arange(10_000, dtype=np.int64)
    version = LoadedVersion("bench", "v1", ids, rng.normal(size=(10_000, 384)).astype(np.float32))
    training = TrainingSet(ids[:1000], rng.integers(0, 77, size=1000).astype(np.int32), 77)
    with threadpool_limits(limits=blas_threads, user_api="blas"):  # the service uses 1
        start = time.perf_counter()
        result = select(
            lambda: version,
            ModelCache(1),
            training,
            None,
            "least_confidence",
            20,
            0,
            ClassifierSpec(),
        )
        total = time.perf_counter() - start
    t = result.timings
    print(
        f"\nSelect least_confidence 10,000 x 384, 1,000 labels / 77 classes, BLAS threads "
        f"{blas_threads}: {total:.3f} s "
        f"(fit {t.fit_s:.3f}, score {t.score_s:.3f}, select {t.select_s:.4f})"
    )
    assert len(result.ids) == 20 and result.n_candidates == 9000
