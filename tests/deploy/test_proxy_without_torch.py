"""The torch-free proxy (deploy/docker/Dockerfile.proxy, the `proxy` extra), checked offline.

`python -m proxal.proxy_service` runs in a real subprocess in which every module that only the
project's other dependencies bring (torch, transformers, ONNX Runtime, ...: the closure of
`dependencies` minus the closure of the `proxy` extra) fails to import, as in the image.
It must serve logistic-regression selections, and answer `mlp` / `bald` with
FAILED_PRECONDITION naming what to install, not INTERNAL.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from proxal.common.v1 import common_pb2
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.runtime.arrays import pack_int32, pack_int64, unpack_int64
from proxal.store import Store

from tests.conftest import add_blobs_version, stops_cleanly

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

# Runs proxy_service as __main__ with the modules named in argv[1] (comma-separated) made
# unimportable, as if their distributions were not installed.
LAUNCHER = """
import importlib.abc, runpy, sys

BLOCKED = set(sys.argv[1].split(","))


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Block())
sys.argv = ["proxy_service", *sys.argv[2:]]
runpy.run_module("proxal.proxy_service", run_name="__main__", alter_sys=True)
"""


def _closure(requirements: list[str]) -> set[str]:
    """Canonical names of the installed distributions these requirements pull in."""
    seen: set[str] = set()
    todo = [(Requirement(r), frozenset({""})) for r in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [(Requirement(r), frozenset({"", *req.extras})) for r in requires]
    return seen


def _blocked_modules() -> set[str]:
    """Top-level modules of distributions that the full install has and the proxy's lacks."""
    missing = _closure(PROJECT["dependencies"]) - _closure(
        PROJECT["optional-dependencies"]["proxy"]
    )
    return {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if all(canonicalize_name(d) in missing for d in dists)
    }


def test_proxy_extra_has_the_ranges_of_the_dependencies() -> None:
    """The `proxy` extra is a subset of `dependencies`, with the same ranges."""
    core = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PROJECT["dependencies"]}
    for line in PROJECT["optional-dependencies"]["proxy"]:
        req = Requirement(line)
        assert canonicalize_name(req.name) in core, f"{req.name} is not a project dependency"
        assert req.specifier == core[canonicalize_name(req.name)].specifier, line


def test_the_blocked_set_is_what_the_image_leaves_out() -> None:
    blocked = _blocked_modules()
    assert {"torch", "transformers", "onnxruntime"} <= blocked
    assert not {"numpy", "lancedb", "lance", "sklearn", "grpc", "lightgbm"} & blocked


@pytest.fixture
def torch_free_proxy(tmp_path: Path) -> Iterator[tuple[proxy_pb2_grpc.ProxyServiceStub, str]]:
    """A proxy subprocess without torch & co. on a store holding one 4-class version."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    vectors = (rng.normal(scale=4.0, size=(4, 8))[labels] + rng.normal(size=(200, 8))).astype(
        np.float32
    )
    version = add_blobs_version(Store(str(tmp_path / "store")), "p", vectors, labels)
    (tmp_path / "launch.py").write_text(LAUNCHER)
    port_file = tmp_path / "port"
    command = [sys.executable, str(tmp_path / "launch.py"), ",".join(sorted(_blocked_modules()))]
    command += ["--port", "0", "--port-file", str(port_file), "--store", str(tmp_path / "store")]
    process = subprocess.Popen(
        [*command, "--log-level", "WARNING"], cwd=REPO, env={**os.environ, "LANCE_LOG": "error"}
    )
    with stops_cleanly(process):
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, f"the proxy exited with {process.returncode}"
            assert time.monotonic() < deadline, "no port file after 60 s"
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{port_file.read_text()}") as channel:
            yield proxy_pb2_grpc.ProxyServiceStub(channel), version


def _select(version: str, kind: str, strategy: str) -> proxy_pb2.SelectRequest:
    ids = np.arange(0, 200, 10)  # 20 labeled rows, 5 of each class
    return proxy_pb2.SelectRequest(
        pool="p",
        embedding_version=version,
        training=proxy_pb2.TrainingSet(
            ids=common_pb2.Int64Array(data=pack_int64(ids)),
            labels=common_pb2.Int32Array(data=pack_int32(np.repeat(np.arange(4), 50)[ids])),
            num_classes=4,
        ),
        classifier=proxy_pb2.ClassifierSpec(kind=kind),
        strategy=strategy,
        k=5,
        seed=1,
    )


def test_proxy_serves_without_torch_and_names_what_mlp_needs(
    torch_free_proxy: tuple[proxy_pb2_grpc.ProxyServiceStub, str],
) -> None:
    stub, version = torch_free_proxy
    for kind in ("logreg", "lightgbm"):
        response = stub.Select(_select(version, kind, "margin"), timeout=60)
        assert len(set(unpack_int64(response.ids.data).tolist())) == 5
        assert response.strategy == "margin"
    for kind, strategy in (("mlp", "margin"), ("mlp", "bald")):
        with pytest.raises(grpc.RpcError) as info:
            stub.Select(_select(version, kind, strategy), timeout=60)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
        assert "requires torch" in info.value.details()
        assert "pip install torch" in info.value.details()
