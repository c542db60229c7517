"""`python -m proxal.proxy_service` as the demo runs it, and its settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.servicer import SERVICE_NAME
from proxal.proxy_service.settings import build_parser, from_args

from tests.conftest import stops_cleanly

REPO = Path(__file__).resolve().parents[2]


def wait_for_port(port_file: Path, process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if process.poll() is not None:
            raise AssertionError(f"proxy_service exited with {process.returncode}")
        time.sleep(0.05)
    raise AssertionError(f"no port file after {timeout} s")


def test_module_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    (tmp_path / "store").mkdir()  # the proxy opens an existing store, never creates one
    command = [
        sys.executable,
        "-m",
        "proxal.proxy_service",
        "--port",
        "0",
        "--port-file",
        str(port_file),
    ]
    command += ["--store", str(tmp_path / "store"), "--log-level", "WARNING", "--max-k", "3"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "LANCE_LOG": "error"})
    with stops_cleanly(process):
        port = wait_for_port(port_file, process, timeout=30)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            response = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
            # the server runs with the limits its flags set
            with pytest.raises(grpc.RpcError) as info:
                proxy_pb2_grpc.ProxyServiceStub(channel).Select(
                    proxy_pb2.SelectRequest(pool="p", embedding_version="v1", k=4), timeout=10
                )
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-k" in info.value.details()


def test_settings_from_flags_env_and_defaults() -> None:
    defaults = from_args(build_parser(env={}).parse_args(["--store", "/tmp/s"]))
    assert (defaults.store, defaults.cache_versions, defaults.cache_models) == ("/tmp/s", 4, 16)
    assert defaults.server.port == 0
    env = {"PROXAL_PROXY_CACHE_VERSIONS": "2", "PROXAL_PROXY_PORT": "5055"}
    from_env = from_args(build_parser(env=env).parse_args([]))
    assert (from_env.cache_versions, from_env.server.port) == (2, 5055)
    flags = from_args(build_parser(env=env).parse_args(["--cache-versions", "7"]))
    assert flags.cache_versions == 7


def test_request_limits_from_flags_env_and_defaults() -> None:
    defaults = from_args(build_parser(env={}).parse_args([])).limits
    assert (defaults.max_k, defaults.max_classes, defaults.max_ids) == (10_000, 1_000, 2_000_000)
    env = {"PROXAL_PROXY_MAX_K": "50", "PROXAL_PROXY_MAX_IDS": "9"}
    limits = from_args(build_parser(env=env).parse_args(["--max-classes", "3"])).limits
    assert (limits.max_k, limits.max_classes, limits.max_ids) == (50, 3, 9)
    with pytest.raises(SystemExit):
        build_parser(env={}).parse_args(["--max-k", "0"])


def test_cache_sizes_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        build_parser(env={}).parse_args(["--cache-versions", "0"])
