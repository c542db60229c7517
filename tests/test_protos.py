"""The committed gRPC stubs must match the .proto files (run `make protos` to refresh)."""

from __future__ import annotations

import runpy

from tests.conftest import REPO


def test_generated_stubs_are_fresh() -> None:
    generate = runpy.run_path(str(REPO / "protos" / "generate.py"))
    stale = generate["stale_stubs"]()
    assert stale == [], f"stale stubs (run `make protos`): {stale}"


def test_every_service_has_a_versioned_package() -> None:
    from proxal.encoder.v1 import encoder_pb2
    from proxal.orchestrator.v1 import orchestrator_pb2
    from proxal.proxy.v1 import proxy_pb2

    names = {
        m.DESCRIPTOR.package: list(m.DESCRIPTOR.services_by_name)
        for m in (encoder_pb2, proxy_pb2, orchestrator_pb2)
    }
    assert names == {
        "proxal.encoder.v1": ["EncoderService"],
        "proxal.proxy.v1": ["ProxyService"],
        "proxal.orchestrator.v1": ["OrchestratorService"],
    }


def test_check_detects_an_edited_proto(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "protos"
    shutil.copytree(REPO / "protos", copy)
    proto = copy / "proxal" / "proxy" / "v1" / "proxy.proto"
    proto.write_text(proto.read_text().replace("int32 k = 6;", "int64 k = 6;"))
    result = subprocess.run(
        [sys.executable, str(copy / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "proxy_pb2.py" in result.stderr
