"""The real MiniLM-L6 encoders: torch and ONNX agree, vectors make sense, truncation counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from proxal.encoder_service.batching import encode_bucketed
from proxal.encoder_service.encoders import (
    MODELS,
    ONNX,
    TORCH,
    Encoder,
    EncoderCache,
    build_encoder,
    onnx_model_path,
)
from proxal.runtime.errors import InvalidArgumentError

LONG_TEXT = " ".join(["my card payment was declined at the shop again"] * 20)


@pytest.fixture(scope="module")
def torch_encoder(encoders: EncoderCache) -> Encoder:
    return encoders.get("minilm-l6", TORCH, 128)


@pytest.fixture(scope="module")
def onnx_encoder(encoders: EncoderCache) -> Encoder:
    return encoders.get("minilm-l6", ONNX, 128)


def test_vectors_are_unit_norm_float32_384(torch_encoder: Encoder, onnx_encoder: Encoder) -> None:
    for encoder in (torch_encoder, onnx_encoder):
        vectors, truncated = encoder.encode(["I lost my card", "How do I top up?"])
        assert vectors.shape == (2, 384) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert truncated == 0
        assert encoder.model_id == "minilm-l6" and encoder.dim == 384
        assert len(encoder.checkpoint_hash) == 64
    assert torch_encoder.checkpoint_hash == onnx_encoder.checkpoint_hash


def test_torch_and_onnx_agree_on_banking77(
    torch_encoder: Encoder, onnx_encoder: Encoder, banking_rows: list[dict[str, str]]
) -> None:
    texts = [row["text"] for row in banking_rows[:64]]
    a, _ = torch_encoder.encode(texts)
    b, _ = onnx_encoder.encode(texts)
    cosine = (a * b).sum(axis=1)
    assert cosine.mean() >= 0.999
    assert cosine.min() >= 0.99


def test_paraphrases_are_closer_than_an_unrelated_sentence(
    torch_encoder: Encoder, onnx_encoder: Encoder
) -> None:
    texts = [
        "My new card still hasn't arrived in the post.",
        "I am still waiting for my card to be delivered.",
        "What exchange rate do you use for euros?",
    ]
    for encoder in (torch_encoder, onnx_encoder):
        v, _ = encoder.encode(texts)
        assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_truncated_texts_are_counted(encoders: EncoderCache) -> None:
    for backend in (TORCH, ONNX):
        short = encoders.get("minilm-l6", backend, 16)
        vectors, truncated = short.encode(["short text", LONG_TEXT, "another short one"])
        assert truncated == 1
        assert vectors.shape == (3, 384)
        assert np.isfinite(vectors).all()


def test_bucketed_batches_keep_the_input_order(
    torch_encoder: Encoder, banking_rows: list[dict[str, str]]
) -> None:
    texts = [LONG_TEXT] + [row["text"] for row in banking_rows[:14]]
    batches: list[int] = []
    vectors, truncated = encode_bucketed(torch_encoder, texts, 4, batches.append)
    assert batches == [4, 4, 4, 3] and truncated == 1
    one_by_one = np.vstack([torch_encoder.encode([t])[0] for t in texts[::5]])
    np.testing.assert_allclose(vectors[::5], one_by_one, atol=1e-4)


def test_onnx_export_is_cached_without_leftovers(
    encoders: EncoderCache, onnx_encoder: Encoder
) -> None:
    cache_dir = encoders.onnx_cache_dir
    path = onnx_model_path(MODELS["minilm-l6"], cache_dir)
    names = [p.name for p in cache_dir.iterdir()]
    assert path.name in names and not any(name.endswith(".tmp") for name in names)
    mtime = path.stat().st_mtime_ns
    assert onnx_model_path(MODELS["minilm-l6"], cache_dir) == path
    assert path.stat().st_mtime_ns == mtime


def test_encoder_cache_reuses_loaded_encoders(
    encoders: EncoderCache, torch_encoder: Encoder
) -> None:
    assert encoders.get("minilm-l6", TORCH, 128) is torch_encoder


@pytest.mark.parametrize(
    ("model", "backend", "max_length", "message"),
    [
        (
            "bert-huge",
            TORCH,
            128,
            r"unknown model 'bert-huge'; choose one of \['minilm-l3', 'minilm-l6'\]",
        ),
        ("minilm-l6", "tensorrt", 128, r"unknown backend 'tensorrt'; choose one of \['torch'"),
        ("minilm-l6", TORCH, 513, r"max_length 513 is out of range"),
        ("minilm-l6", ONNX, 0, r"max_length 0 is out of range"),
    ],
)
def test_build_encoder_rejects_unknown_choices(
    tmp_path: Path, model: str, backend: str, max_length: int, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build_encoder(model, backend, max_length, tmp_path)
    assert not any(tmp_path.iterdir())
