"""The encoder on a CUDA GPU (skipped without one): fp16/bf16 agree with fp32, the machine's
default is fp16, and ORT's CUDA provider where onnxruntime has it. bench/gpu_check.sh runs
this file; it needs no store, so it runs where LanceDB is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import torch
from proxal.encoder_service.batching import encode_bucketed
from proxal.encoder_service.encoders import (
    BF16,
    FP16,
    FP32,
    INT8,
    MINILM_L6,
    ONNX,
    TORCH,
    build_encoder,
    resolve_precision,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
Vectors = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def texts(banking_rows: list[dict[str, str]]) -> list[str]:
    return [row["text"] for row in banking_rows[:256]]


@pytest.fixture(scope="module")
def reference(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> Vectors:
    """torch fp32 vectors on the GPU."""
    encoder = build_encoder(MINILM_L6, TORCH, 128, tmp_path_factory.mktemp("onnx"), FP32)
    assert encoder.runs_on.startswith("cuda")
    return encode_bucketed(encoder, texts, 64)[0]


def mean_cosine(a: Vectors, b: Vectors) -> float:
    return float((a * b).sum(axis=1).mean())


@pytest.mark.parametrize("precision", [FP16, BF16])
def test_cuda_half_precisions_agree_with_fp32(
    precision: str, texts: list[str], reference: Vectors, tmp_path: Path
) -> None:
    encoder = build_encoder(MINILM_L6, TORCH, 128, tmp_path, precision)
    vectors, truncated = encode_bucketed(encoder, texts, 64)
    cosine = mean_cosine(vectors, reference)
    print(f"cuda {precision} vs fp32: mean cosine {cosine:.5f} on {len(texts)} texts")
    assert encoder.runs_on.startswith("cuda") and encoder.precision == precision
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert cosine >= 0.99 and truncated == 0


def test_the_default_on_a_gpu_is_fp16() -> None:
    resolved = resolve_precision(TORCH, "")
    assert resolved.precision == FP16 and resolved.reason.startswith("auto: cuda (")
    on_ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert resolve_precision(ONNX, "").precision == (FP32 if on_ort_cuda else INT8)


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)",
)
def test_onnx_on_cuda_agrees_with_torch(
    texts: list[str], reference: Vectors, tmp_path: Path
) -> None:
    encoder = build_encoder(MINILM_L6, ONNX, 128, tmp_path, FP32)
    vectors, _ = encode_bucketed(encoder, texts, 64)
    assert encoder.runs_on == "CUDAExecutionProvider"
    assert mean_cosine(vectors, reference) >= 0.999
