"""The proxy and the orchestrator as subprocesses secured by environment variables alone
(mutual TLS and a bearer token, as the Kubernetes manifests set them), called through the
real clients: the orchestrator reaches the proxy over TLS with the token, and a caller
without the token gets UNAUTHENTICATED and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.orchestrator.v1 import orchestrator_pb2 as pb
from proxal.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from proxal.orchestrator_service.rpc.clients import ProxyClient, TrainingSet, open_channel
from proxal.runtime import healthcheck
from proxal.runtime.security import ClientSecurity
from proxal.store import EncoderInfo, Store

from tests.proxal_runtime.pki import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-" + "c" * 32
DIM, N = 8, 120
CLASSES = ["alpha", "beta", "gamma"]


def _service_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXAL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "protos")])
    env["LANCE_LOG"] = "error"
    return env | extra


class Service:
    """`python -m <module> [args]` configured by `env` only; `address` once it serves."""

    def __init__(self, module: list[str], env: dict[str, str], port_file: Path, log: Path):
        self.port_file = port_file
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *module], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.address = ""

    def wait_serving(self, security: ClientSecurity, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "no port file in time"
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(self.port_file.read_text())}"
        serving, status = healthcheck.check(self.address, "", timeout, security)
        assert serving, status
        return self.address

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(str(tmp_path_factory.mktemp("secure") / "store"))
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(CLASSES), size=N)
    x = (rng.normal(scale=4.0, size=(len(CLASSES), DIM))[y] + rng.normal(size=(N, DIM))).astype(
        np.float32
    )
    store.add_pool_rows("blobs", "train", [f"text {i}" for i in range(N)], [CLASSES[i] for i in y])
    with store.begin_embedding("blobs", EncoderInfo("synthetic", "none", DIM, 0)) as writer:
        writer.write(np.arange(N), x)
        writer.commit()
    return store


@pytest.fixture(scope="module")
def stack(
    pki: Pki, store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """(proxy address, orchestrator address, the orchestrator's log)."""
    tmp = tmp_path_factory.mktemp("services")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    # As in deploy/k8s: one certificate, served and presented as the client's, one CA.
    secured = {
        "PROXAL_STORE": store.uri,
        "PROXAL_TLS_CERT": str(pki.server_cert),
        "PROXAL_TLS_KEY": str(pki.server_key),
        "PROXAL_TLS_CLIENT_CA": str(pki.ca),
        "PROXAL_TLS_CA": str(pki.ca),
        "PROXAL_TLS_CLIENT_CERT": str(pki.server_cert),
        "PROXAL_TLS_CLIENT_KEY": str(pki.server_key),
    }
    probe = ClientSecurity(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    started = []
    try:
        proxy = Service(
            ["proxy_service"],
            _service_env(
                secured
                | {"PROXAL_AUTH_TOKEN": TOKEN, "PROXAL_PROXY_PORT_FILE": str(tmp / "proxy.port")},
            ),
            tmp / "proxy.port",
            tmp / "proxy.log",
        )
        started.append(proxy)
        proxy_address = proxy.wait_serving(probe)
        orchestrator = Service(
            ["orchestrator", "serve"],
            _service_env(
                secured
                | {
                    "PROXAL_AUTH_TOKEN_FILE": str(token_file),
                    "PROXAL_ORCHESTRATOR_PORT_FILE": str(tmp / "orchestrator.port"),
                    "PROXAL_ORCHESTRATOR_PROXY": proxy_address,
                },
            ),
            tmp / "orchestrator.port",
            tmp / "orchestrator.log",
        )
        started.append(orchestrator)
        yield proxy_address, orchestrator.wait_serving(probe), orchestrator.log
    finally:
        for service in started:
            service.stop()


@pytest.fixture()
def client_env(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as a client: the CA, a client certificate and the token."""
    for key in list(os.environ):
        if key.startswith("PROXAL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PROXAL_TLS_CA", str(pki.ca))
    monkeypatch.setenv("PROXAL_TLS_CLIENT_CERT", str(pki.client_cert))
    monkeypatch.setenv("PROXAL_TLS_CLIENT_KEY", str(pki.client_key))
    monkeypatch.setenv("PROXAL_AUTH_TOKEN", TOKEN)


@pytest.mark.usefixtures("client_env")
def test_secured_stack_through_the_real_clients(
    stack: tuple[str, str, Path], store: Store, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy_address, orchestrator_address, orchestrator_log = stack
    labels = store.pool_rows("blobs", split="train").column("label").to_pylist()
    training = TrainingSet(
        ids=np.arange(6, dtype=np.int64),
        labels=np.array([CLASSES.index(c) for c in labels[:6]], dtype=np.int32),
        num_classes=len(CLASSES),
    )
    proxy = ProxyClient(proxy_address, timeout=60)
    selection = proxy.select("blobs", "v1", training, "margin", k=4, seed=0)
    assert len(selection.ids) == 4
    proxy.close()

    with open_channel(orchestrator_address) as channel:
        stub = pb_grpc.OrchestratorServiceStub(channel)
        request = pb.CreateSessionRequest(session="secure", pool="blobs", batch_size=5)
        assert stub.CreateSession(request, timeout=60).session == "secure"
        # NextBatch makes the orchestrator call the proxy: mutual TLS and the token
        batch = stub.NextBatch(pb.NextBatchRequest(session="secure"), timeout=60)
        assert len(batch.items) == 5
    assert "mutual TLS, 1 bearer token(s)" in orchestrator_log.read_text()

    monkeypatch.delenv("PROXAL_AUTH_TOKEN")  # the same certificate, no token
    with open_channel(orchestrator_address) as channel:
        stub = pb_grpc.OrchestratorServiceStub(channel)
        create = pb.CreateSessionRequest(session="intruder", pool="blobs")
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateSession(create, timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            stub.NextBatch(pb.NextBatchRequest(session="secure"), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    proxy = ProxyClient(proxy_address, timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        proxy.select("blobs", "v1", training, "margin", k=4, seed=0)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    proxy.close()

    monkeypatch.setenv("PROXAL_AUTH_TOKEN", TOKEN)
    with open_channel(orchestrator_address) as channel:
        stub = pb_grpc.OrchestratorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetSession(pb.GetSessionRequest(session="intruder"), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was created
        status = stub.GetSession(pb.GetSessionRequest(session="secure"), timeout=30)
        assert status.rounds == 1  # the refused NextBatch did not run a round

    # Plaintext, or TLS without a client certificate, does not even connect.
    for outsider in (ClientSecurity(token=TOKEN), ClientSecurity(ca=pki.ca, token=TOKEN)):
        with open_channel(orchestrator_address, security=outsider) as channel:
            stub = pb_grpc.OrchestratorServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.GetSession(pb.GetSessionRequest(session="secure"), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_placeholder_certificate_fails_at_start(tmp_path: Path) -> None:
    """What a deployment with the REPLACE_ME Secrets gets: no server, a clear message."""
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("REPLACE_ME")
    env = _service_env(
        {
            "PROXAL_STORE": str(tmp_path / "store"),
            "PROXAL_TLS_CERT": str(tmp_path / "tls.crt"),
            "PROXAL_TLS_KEY": str(tmp_path / "tls.key"),
            "PROXAL_AUTH_TOKEN": TOKEN,
        },
    )
    result = subprocess.run(
        [sys.executable, "-m", "proxal.proxy_service"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "are not a PEM certificate and its unencrypted private key" in result.stderr
    assert "Traceback" not in result.stderr
