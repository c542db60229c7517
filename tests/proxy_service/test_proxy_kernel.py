"""The scoring kernel and float16 scoring with exact re-score, on real parts.

Real MiniLM-L6 embeddings of Banking77 texts in a real LanceDB store, a real VersionCache
holding them in float16 or float32, and a real gRPC server for the refusals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service import kernel
from proxal.proxy_service.cache import FLOAT16, FLOAT32, LoadedVersion, VersionCache
from proxal.proxy_service.classifiers import LogisticRegressionProxy
from proxal.proxy_service.selection import ModelCache, Query, TrainingSet, select
from proxal.proxy_service.servicer import SERVICE_NAME, ProxyServicer
from proxal.runtime import uncertainty
from proxal.runtime.arrays import pack_int32, pack_int64
from proxal.runtime.server import ServerSettings, start_server
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import Store

from tests.conftest import add_blobs_version, banking_slice

KINDS = kernel.KINDS
CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked")
PER_CLASS = 30


@pytest.fixture(scope="module")
def real_embeddings() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """MiniLM-L6 embeddings (150, 384) of Banking77 texts and their classes (300,)."""
    from proxal.encoder_service.encoders import MINILM_L6, MODELS, TorchEncoder

    texts, labels = banking_slice(CLASSES, PER_CLASS)
    vectors, _ = TorchEncoder(MODELS[MINILM_L6], max_length=32).encode(texts)
    return vectors.astype(np.float32), np.asarray(labels, dtype=np.int64)


def _model(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], classes: int) -> Any:
    return LogisticRegressionProxy(C=10.0).fit(x, y, classes)


def _reference(kind: str, model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return uncertainty.uncertainty(kind, model.predict_proba(x))


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_matches_the_reference_formulas(
    kind: str, real_embeddings: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    x, y = real_embeddings
    model = _model(x[::3], y[::3], len(CLASSES) + 2)  # two classes never seen: p = 0
    scorer = kernel.LinearScorer(model.coef_, model.intercept_, kind)
    np.testing.assert_allclose(scorer(x), _reference(kind, model, x), atol=2e-6)


def test_float16_rows_widen_exactly() -> None:
    """Subnormal, zero, negative and large float16 values: the kernel's bit widening equals
    numpy's conversion (logits within float32 accumulation tolerance)."""
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(300),
            [0.0, -0.0, 6e-8, -6e-8, 3e-5, -3e-5, 6.1e-5, 65504.0, -65504.0, 1e-3],
            rng.uniform(-1e-4, 1e-4, 74),
        ]
    )
    rows = np.stack([np.roll(values, i) for i in range(16)]).astype(np.float16)  # (16, 384)
    coef = rng.standard_normal((3, rows.shape[1])).astype(np.float32)
    scorer = kernel.LinearScorer(coef, np.zeros(3, np.float32), "entropy")
    out = np.empty((3, len(rows)), dtype=np.float32)
    widened = scorer.logits(rows, out).copy()
    expected = rows.astype(np.float64) @ coef.T.astype(np.float64)
    np.testing.assert_allclose(widened.T, expected, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_float16_error_bound_holds_on_adversarial_rows(kind: str) -> None:
    """Rows built so float16 rounding moves every logit the same way (x_j of the sign of
    w_j at values halfway between float16 neighbours): the bound still holds."""
    rng = np.random.default_rng(1)
    d = 384
    coef = rng.standard_normal((4, d)).astype(np.float32)
    halfway = (np.float16(0.5) + np.float16(np.spacing(np.float16(0.5))) / 2).astype(np.float32)
    rows = np.full((512, d), halfway, dtype=np.float32)
    rows *= np.sign(coef[0])
    rows[256:] *= rng.uniform(0.01, 3.0, (256, 1)).astype(np.float32)
    scorer = kernel.LinearScorer(coef / 40, np.zeros(4, np.float32), kind)
    exact = kernel.scores_from_logits(kind, scorer.logits(rows, np.empty((4, 512), np.float32)))
    approx = scorer(rows.astype(np.float16))
    bound = kernel.Float16Error.of(scorer, d)(np.linalg.norm(rows, axis=1).astype(np.float32))
    assert np.abs(approx - exact).max() > 0  # float16 did move the scores
    assert (np.abs(approx - exact) <= bound).all()


def _version(
    store: Store, vectors: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]
) -> EmbeddingVersion:
    return EmbeddingVersion("bank", add_blobs_version(store, "bank", vectors, labels))


def _select(version: LoadedVersion, query: Query) -> Any:
    return select(lambda: version, ModelCache(4), query, threads=2)


@pytest.mark.parametrize("kind", KINDS)
def test_float16_picks_equal_float32_on_real_embeddings(
    kind: str,
    store: Store,
    real_embeddings: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
) -> None:
    x, y = real_embeddings
    name = _version(store, x, y)
    cache = VersionCache(store, 2, 4, precision=FLOAT16, float16_min_rows=1)
    half = cache.get(name)
    assert half.precision == FLOAT16 and half.vectors.dtype == np.float16
    full = VersionCache(store, 2, 4, precision=FLOAT32).get(name)
    labeled = np.arange(0, len(x), 10)
    training = TrainingSet(labeled, y[labeled].astype(np.int32), len(CLASSES))
    for k in (1, 5, 20):
        query = Query(training, kind, k, seed=k, return_scores=True)
        got, want = _select(half, query), _select(full, query)
        assert got.precision == FLOAT16 and want.precision == FLOAT32
        assert got.rescored >= k
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)


@pytest.mark.parametrize("kind", KINDS)
def test_float16_picks_equal_float32_on_near_ties(kind: str, store: Store) -> None:
    """Rows whose float32 scores differ by far less than float16's error: many ties within
    the bound; the re-score still returns float32's ids and scores."""
    rng = np.random.default_rng(2)
    d, n = 64, 3000
    base = rng.standard_normal(d).astype(np.float32)
    x = base + rng.standard_normal((n, d)).astype(np.float32) * 1e-4  # near-duplicates
    x[::7] = rng.standard_normal((len(x[::7]), d)).astype(np.float32)
    y = rng.integers(0, 3, n)
    name = _version(store, x, y)
    half = VersionCache(store, 2, 4, precision=FLOAT16, float16_min_rows=1).get(name)
    full = VersionCache(store, 2, 4, precision=FLOAT32).get(name)
    labeled = np.arange(0, n, 7)[:200]
    training = TrainingSet(labeled, y[labeled].astype(np.int32), 3)
    query = Query(training, kind, 25, seed=3)
    got, want = _select(half, query), _select(full, query)
    assert got.rescored > 25  # the near-ties had to be re-scored
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_scan_keeps_scores_and_survivors_consistent() -> None:
    """All scores equal one scorer call; the survivors hold the true top k."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20_000, 32)).astype(np.float32)
    scorer = kernel.LinearScorer(
        rng.standard_normal((4, 32)).astype(np.float32) / 8, np.zeros(4, np.float32), "margin"
    )
    rows = np.flatnonzero(rng.random(len(x)) < 0.7)
    found = kernel.scan(
        x,
        rows,
        scorer,
        50,
        lambda r, s: np.full(len(s), 1e-4, np.float32),
        threads=2,
        keep_all=True,
    )
    assert found.all_scores is not None
    np.testing.assert_allclose(found.all_scores, scorer(x[rows]), atol=1e-6)
    best = np.argsort(-found.all_scores, kind="stable")[:50]
    assert set(best.tolist()) <= set(found.positions.tolist())
    assert len(found.positions) < 4 * 50 + kernel.BLOCK_ROWS


@pytest.fixture
def proxy_stub(store: Store) -> Iterator[tuple[proxy_pb2_grpc.ProxyServiceStub, Store]]:
    cache = VersionCache(store, 2, 4, float16_min_rows=1)
    servicer = ProxyServicer(cache, score_threads=1)
    running = start_server(
        ServerSettings(port=0, max_workers=4),
        lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
    )
    channel = grpc.insecure_channel(running.address)
    try:
        yield proxy_pb2_grpc.ProxyServiceStub(channel), store
    finally:
        channel.close()
        running.stop()


def _request(name: EmbeddingVersion, n: int, precision: str) -> proxy_pb2.SelectRequest:
    ids = np.arange(0, n, 5, dtype=np.int64)
    return proxy_pb2.SelectRequest(
        pool=name.pool,
        embedding_version=name.tag,
        training=proxy_pb2.TrainingSet(
            ids=common_pb2.Int64Array(data=pack_int64(ids)),
            labels=common_pb2.Int32Array(data=pack_int32((ids % 2).astype(np.int32))),
            num_classes=2,
        ),
        strategy="least_confidence",
        k=3,
        precision=precision,
    )


def test_out_of_range_float16_is_refused_over_grpc(
    proxy_stub: tuple[proxy_pb2_grpc.ProxyServiceStub, Store],
) -> None:
    stub, store = proxy_stub
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    x[17, 3] = 1e6  # beyond float16's 65504
    name = _version(store, x, np.zeros(200, np.int64))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Select(_request(name, 200, FLOAT16))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "float16" in str(refused.value.details()) and "float32" in str(refused.value.details())
    auto = stub.Select(_request(name, 200, ""))  # the replica keeps serving; auto falls back
    assert auto.precision.startswith(FLOAT32) and "range" in auto.precision
    assert len(auto.ids.data) == 3 * 8


def test_precision_is_in_the_response(
    proxy_stub: tuple[proxy_pb2_grpc.ProxyServiceStub, Store],
) -> None:
    stub, store = proxy_stub
    x = np.random.default_rng(6).standard_normal((300, 8)).astype(np.float32)
    name = _version(store, x, np.zeros(300, np.int64))
    half = stub.Select(_request(name, 300, ""))  # auto, float16 from 1 row here
    full = stub.Select(_request(name, 300, FLOAT32))
    assert (half.precision, full.precision) == (FLOAT16, FLOAT32)
    assert half.rescored >= 3 and full.rescored == 0
    assert half.ids.data == full.ids.data and half.scores.data == full.scores.data
    request = _request(name, 300, FLOAT16)
    request.strategy = "coreset"
    with pytest.raises(grpc.RpcError) as refused:
        stub.Select(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
