"""The command line: settings from flags and environment, and a real server subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import FrozenInstanceError
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from proxal.encoder_service.servicer import SERVICE_NAME
from proxal.encoder_service.settings import parse_settings

from tests.ops import wait_for


def test_settings_defaults_environment_and_flags(tmp_path: Path) -> None:
    defaults = parse_settings([], env={})
    assert defaults.backend == "torch"
    assert defaults.onnx_cache == Path("~/.cache/proxal/onnx").expanduser()
    assert defaults.max_upload_bytes == 256 * 1024 * 1024
    assert defaults.max_text_chars == 100_000

    env = {
        "PROXAL_ENCODER_BACKEND": "onnx",
        "PROXAL_ENCODER_MAX_UPLOAD_MB": "8",
        "PROXAL_ENCODER_MAX_TEXT_CHARS": "5000",
        "PROXAL_STORE": str(tmp_path / "env-store"),
    }
    from_env = parse_settings([], env=env)
    assert (from_env.backend, from_env.max_upload_bytes) == ("onnx", 8 * 1024 * 1024)
    assert from_env.max_text_chars == 5000
    assert parse_settings(["--max-text-chars", "7"], env=env).max_text_chars == 7
    assert from_env.store == str(tmp_path / "env-store")

    flags = parse_settings(
        ["--backend", "torch", "--onnx-cache", str(tmp_path / "onnx"), "--port", "7000"], env=env
    )
    assert (flags.backend, flags.onnx_cache, flags.server.port) == (
        "torch",
        tmp_path / "onnx",
        7000,
    )
    with pytest.raises(FrozenInstanceError):
        flags.backend = "onnx"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--backend", "tensorrt"], {}),
        ([], {"PROXAL_ENCODER_BACKEND": "tensorrt"}),
        (["--max-upload-mb", "0"], {}),
        (["--max-text-chars", "0"], {}),
    ],
)
def test_invalid_settings_exit_with_usage_error(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, env=env)
    assert exit_info.value.code == 2
    assert "proxal-encoder" in capsys.readouterr().err


def test_python_m_encoder_service_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    command = [
        sys.executable, "-m", "proxal.encoder_service", "--port", "0",
        "--port-file", str(port_file),
        "--store", str(tmp_path / "store"), "--onnx-cache", str(tmp_path / "onnx"),
        "--metrics-port", "0",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LANCE_LOG": "error"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the server did not write its port file"
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{int(port_file.read_text())}") as channel:
            # NOT_SERVING until the store answers and the default model is loaded
            wait_for(channel, health_pb2.HealthCheckResponse.SERVING, SERVICE_NAME)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "serving proxal.encoder.v1.EncoderService" in output
        assert "metrics on http://127.0.0.1:" in output and "ready: " in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
