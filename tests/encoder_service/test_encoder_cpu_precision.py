"""The machine's default precision, CPU bf16 (detected from the CPU flags, refused without
them) and its agreement with fp32 on real Banking77 texts."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import torch
from proxal.encoder.v1 import encoder_pb2
from proxal.encoder_service import encoders as encoders_module
from proxal.encoder_service.encoders import (
    BF16,
    FP16,
    FP32,
    INT8,
    MINILM_L3,
    MINILM_L6,
    MODELS,
    ONNX,
    TORCH,
    CpuInfo,
    EncoderCache,
    ResolvedPrecision,
    TorchEncoder,
    check_precision,
    parse_cpuinfo,
    resolve_precision,
)
from proxal.encoder_service.settings import parse_settings
from proxal.runtime.errors import InvalidArgumentError

from tests.encoder_service.conftest import EncoderServer, jsonl

Vectors = npt.NDArray[np.float32]
EPYC = CpuInfo("AMD EPYC", frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"}))
SAPPHIRE_RAPIDS = CpuInfo(
    "Intel(R) Xeon(R) Platinum 8480+",
    frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16"}),
)
COOPER_LAKE = CpuInfo("Intel(R) Xeon(R) Gold 6348H", frozenset({"avx2", "avx512f", "avx512_bf16"}))
CPUINFO_TEXT = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: ignored: only the first processor is read
flags\t\t: fpu
"""
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 and fp16 are valid on a GPU")
POOL = "cpu-precision"


UseCpu = Callable[[CpuInfo], None]


@pytest.fixture
def use_cpu(monkeypatch: pytest.MonkeyPatch) -> UseCpu:
    """Sets the CPU that the precision checks see, for one test."""

    def use(info: CpuInfo) -> None:
        monkeypatch.setattr(encoders_module, "host_cpu", lambda: info)

    return use


def mean_cosine(a: Vectors, b: Vectors) -> float:
    return float((a * b).sum(axis=1).mean())


def test_cpuinfo_is_parsed_from_the_first_processor() -> None:
    info = parse_cpuinfo(CPUINFO_TEXT)
    assert info.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert info.bf16_flags == ["amx_bf16", "avx512_bf16"] and info.vector_isa == "avx512"
    assert parse_cpuinfo("") == CpuInfo("unknown CPU", frozenset())
    assert (EPYC.bf16_flags, EPYC.vector_isa) == ([], "avx2")
    assert (COOPER_LAKE.bf16_flags, CpuInfo("arm", frozenset()).vector_isa) == (
        ["avx512_bf16"],
        "baseline",
    )


@pytest.mark.parametrize(
    ("info", "backend", "cuda", "expected", "reason"),
    [
        (EPYC, TORCH, False, FP32, "auto: cpu avx2, no native bf16"),
        (SAPPHIRE_RAPIDS, TORCH, False, BF16, "auto: cpu amx_bf16"),
        (COOPER_LAKE, TORCH, False, BF16, "auto: cpu avx512_bf16"),
        (EPYC, ONNX, False, INT8, "auto: cpu avx2, onnx int8"),
        (SAPPHIRE_RAPIDS, ONNX, False, INT8, "auto: cpu avx512, onnx int8"),
        (EPYC, TORCH, True, FP16, "auto: cuda"),
        (SAPPHIRE_RAPIDS, ONNX, True, FP32, "auto: onnx on cuda"),
    ],
)
def test_the_default_precision_follows_the_machine(
    use_cpu: UseCpu, info: CpuInfo, backend: str, cuda: bool, expected: str, reason: str
) -> None:
    use_cpu(info)
    for requested in ("", "auto"):
        resolved = resolve_precision(backend, requested, cuda=cuda)  # MiniLM-L6
        assert resolved.precision == expected and resolved.reason.startswith(reason)
    if not cuda:
        check_precision(MODELS[MINILM_L6], backend, expected)  # the default is valid there
    assert resolve_precision(backend, FP32, cuda=cuda).precision == FP32


def test_minilm_l3_defaults_to_fp32_on_cpu(use_cpu: UseCpu) -> None:
    use_cpu(EPYC)
    resolved = resolve_precision(ONNX, "", MINILM_L3, cuda=False)
    assert resolved == ResolvedPrecision(FP32, "auto: cpu avx2, minilm-l3 int8 agrees < 0.99")
    assert resolve_precision(ONNX, "", MINILM_L6, cuda=False).precision == INT8


@CPU_ONLY
def test_bf16_is_refused_on_a_cpu_without_native_bf16(use_cpu: UseCpu) -> None:
    use_cpu(EPYC)
    with pytest.raises(InvalidArgumentError) as info:
        check_precision(MODELS[MINILM_L6], TORCH, BF16)
    message = str(info.value)
    for part in ("amx_bf16", "avx512_bf16", "AMD EPYC, avx2", "use fp32", "onnx backend with int8"):
        assert part in message
    use_cpu(COOPER_LAKE)
    check_precision(MODELS[MINILM_L6], TORCH, BF16)
    with pytest.raises(InvalidArgumentError, match="fp16 needs a GPU"):
        check_precision(MODELS[MINILM_L6], TORCH, FP16)


@CPU_ONLY
def test_forced_cpu_bf16_autocast_agrees_with_fp32(
    use_cpu: UseCpu, encoders: EncoderCache, banking_rows: list[dict[str, str]]
) -> None:
    """The bf16 path as an AMX machine runs it (emulated here: slower, same numerics)."""
    texts = [row["text"] for row in banking_rows[:48]]
    reference, _ = encoders.get(MINILM_L6, TORCH, 128).encode(texts)
    use_cpu(SAPPHIRE_RAPIDS)
    encoder = TorchEncoder(MODELS[MINILM_L6], 128, BF16)
    vectors, truncated = encoder.encode(texts)
    cosine = mean_cosine(vectors, reference)
    print(f"cpu bf16 autocast vs fp32: mean cosine {cosine:.5f} on {len(texts)} texts")
    assert encoder.runs_on == "cpu (bf16 autocast)" and encoder.precision == BF16
    assert vectors.dtype == np.float32 and vectors.shape == (48, 384) and truncated == 0
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert next(encoder._model.parameters()).dtype == torch.float32
    assert cosine >= 0.99
    assert not np.array_equal(vectors, reference)  # it did run in bf16


@pytest.fixture(scope="module")
def cpu_pool(encoder_server: EncoderServer, banking_rows: list[dict[str, str]]) -> str:
    header = encoder_pb2.PoolHeader(pool=POOL)
    chunk = encoder_pb2.IngestPoolChunk(header=header, data=jsonl(banking_rows[:12]))
    encoder_server.stub.IngestPool(iter([chunk]), timeout=60)
    return POOL


@CPU_ONLY
def test_embed_pool_refuses_bf16_here_and_serves_on(
    use_cpu: UseCpu, encoder_server: EncoderServer, cpu_pool: str
) -> None:
    use_cpu(EPYC)
    request = encoder_pb2.EmbedPoolRequest(pool=cpu_pool, backend=TORCH, precision=BF16)
    with pytest.raises(grpc.RpcError) as info:
        list(encoder_server.stub.EmbedPool(request, timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "AMX or AVX-512 BF16" in (info.value.details() or "")
    *_, last = encoder_server.stub.EmbedPool(
        encoder_pb2.EmbedPoolRequest(pool=cpu_pool, backend=TORCH), timeout=120
    )
    assert (last.version.precision, last.version.row_count) == (FP32, 12)


def test_the_default_run_records_the_resolved_precision(
    encoder_server: EncoderServer, cpu_pool: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxal.encoder_service.servicer")
    for backend in (TORCH, ONNX):
        request = encoder_pb2.EmbedPoolRequest(pool=cpu_pool, backend=backend)
        *_, last = encoder_server.stub.EmbedPool(request, timeout=120)
        resolved = resolve_precision(backend, "")
        assert last.version.precision == resolved.precision
        assert last.version.backend == backend
        assert f"precision {resolved.precision} ({resolved.reason})" in caplog.text


def test_the_precision_setting_defaults_to_auto_and_is_checked(
    use_cpu: UseCpu, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_settings([], env={}).precision == "auto"
    env = {"PROXAL_ENCODER_PRECISION": INT8}
    assert parse_settings(["--backend", ONNX], env=env).precision == INT8
    for argv in (["--precision", "fp64"], ["--precision", INT8]):
        with pytest.raises(SystemExit) as exit_info:
            parse_settings(argv, env={})
        assert exit_info.value.code == 2
    assert "--precision int8: int8 is an onnx precision" in capsys.readouterr().err
    use_cpu(EPYC)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            parse_settings(["--precision", BF16], env={})
        assert "this CPU (AMD EPYC, avx2) has neither" in capsys.readouterr().err
