"""TLS, mutual TLS and bearer tokens on real servers (127.0.0.1, port 0), generated certs."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from proxal.runtime import healthcheck
from proxal.runtime.security import (
    ClientSecurity,
    SecurityConfigError,
    ServerSecurity,
)
from proxal.runtime.server import RunningServer, ServerSettings, start_server
from proxal.runtime.settings import add_common_args, server_settings

from tests.proxal_runtime.pki import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
SERVICE = "test.Secured"
TOKEN = "t0k3n-" + "a" * 26
OLD_TOKEN = "old-" + "b" * 28


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Recorder:
    """A servicer with a unary, a client-streaming and a server-streaming method; `calls`
    counts the handler runs (what a refused call must never reach)."""

    def __init__(self) -> None:
        self.calls = 0

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        return b"echo:" + request

    def upload(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        return b"".join(requests)

    def download(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self.calls += 1
        yield from (b"a", b"b")

    def register(self, server: grpc.Server) -> None:
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Upload": grpc.stream_unary_rpc_method_handler(self.upload),
            "Download": grpc.unary_stream_rpc_method_handler(self.download),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


Serve = Callable[[ServerSecurity], tuple[RunningServer, Recorder]]


@pytest.fixture()
def serve() -> Iterator[Serve]:
    running: list[RunningServer] = []

    def start(security: ServerSecurity) -> tuple[RunningServer, Recorder]:
        recorder = Recorder()
        server = start_server(
            ServerSettings(port=0, security=security), recorder.register, [SERVICE]
        )
        running.append(server)
        return server, recorder

    yield start
    for server in running:
        server.stop(0)


def call_all(channel: grpc.Channel) -> list[bytes]:
    """One call of each kind; raises the first RpcError."""
    return [
        channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=5),
        channel.stream_unary(f"/{SERVICE}/Upload")(iter([b"1", b"2"]), timeout=5),
        b"".join(channel.unary_stream(f"/{SERVICE}/Download")(b"x", timeout=5)),
    ]


def each_call_fails(
    channel: grpc.Channel, metadata: list[tuple[str, str]] | None = None
) -> list[tuple[grpc.StatusCode, str]]:
    """(code, details) of each kind of call (with `metadata`), which must all fail."""
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    upload = channel.stream_unary(f"/{SERVICE}/Upload")
    download = channel.unary_stream(f"/{SERVICE}/Download")
    calls: list[Callable[[], Any]] = [
        lambda: unary(b"x", timeout=5, metadata=metadata),
        lambda: upload(iter([b"1"]), timeout=5, metadata=metadata),
        lambda: list(download(b"x", timeout=5, metadata=metadata)),
    ]
    failures = []
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        failures.append((info.value.code(), info.value.details()))
    return failures


def test_tls_serves_tls_clients_only(serve: Serve, pki: Pki) -> None:
    server, recorder = serve(ServerSecurity(cert=pki.server_cert, key=pki.server_key))
    with ClientSecurity(ca=pki.ca).channel(server.address) as channel:
        assert call_all(channel) == [b"echo:x", b"12", b"ab"]
    with grpc.insecure_channel(server.address) as channel:
        codes = {code for code, _ in each_call_fails(channel)}
    assert codes == {grpc.StatusCode.UNAVAILABLE}
    # a client that trusts another CA does not accept the server's certificate
    with ClientSecurity(ca=pki.rogue_ca).channel(server.address) as channel:
        codes = {code for code, _ in each_call_fails(channel)}
    assert codes == {grpc.StatusCode.UNAVAILABLE}
    assert recorder.calls == 3
    assert healthcheck.check(server.address, SERVICE, 5, ClientSecurity(ca=pki.ca)) == (
        True,
        "SERVING",
    )
    assert not healthcheck.check(server.address, SERVICE, 0.5, ClientSecurity())[0]


def test_mutual_tls_needs_a_client_certificate_from_the_ca(serve: Serve, pki: Pki) -> None:
    server, recorder = serve(
        ServerSecurity(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca)
    )
    client = ClientSecurity(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    with client.channel(server.address) as channel:
        assert call_all(channel) == [b"echo:x", b"12", b"ab"]
    for refused in (
        ClientSecurity(ca=pki.ca),
        ClientSecurity(ca=pki.ca, cert=pki.rogue_client_cert, key=pki.rogue_client_key),
    ):
        with refused.channel(server.address) as channel:
            assert {code for code, _ in each_call_fails(channel)} == {grpc.StatusCode.UNAVAILABLE}
        assert not healthcheck.check(server.address, "", 0.5, refused)[0]
    assert recorder.calls == 3
    assert healthcheck.check(server.address, SERVICE, 5, client)[0]


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext-loopback"])
def test_token_gates_every_call_but_health(serve: Serve, pki: Pki, tls: bool) -> None:
    files = {"cert": pki.server_cert, "key": pki.server_key} if tls else {}
    server, recorder = serve(ServerSecurity(**files, tokens=(TOKEN, OLD_TOKEN)))
    ca = pki.ca if tls else None

    with ClientSecurity(ca=ca).channel(server.address) as channel:
        failures = each_call_fails(channel)
        assert healthcheck.check(server.address, SERVICE, 5, ClientSecurity(ca=ca))[0]
        # reflection is not exempt: it needs the token too
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for code, details in failures:
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer <token>" in details and "missing" in details

    for wrong in ("Bearer " + "x" * 32, f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"):
        with ClientSecurity(ca=ca).channel(server.address) as channel:
            for code, details in each_call_fails(channel, [("authorization", wrong)]):
                assert code == grpc.StatusCode.UNAUTHENTICATED, wrong
                assert "not accepted" in details and TOKEN not in details
    assert recorder.calls == 0, "a refused call must never reach its handler"

    for token in (TOKEN, OLD_TOKEN):  # both tokens of a rotation are accepted
        with ClientSecurity(ca=ca, token=token).channel(server.address) as channel:
            assert call_all(channel) == [b"echo:x", b"12", b"ab"]
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            [answer] = stub.ServerReflectionInfo(iter([request]), timeout=5)
            assert SERVICE in {s.name for s in answer.list_services_response.service}
    assert recorder.calls == 6


def _settings(argv: list[str], env: dict[str, str]) -> ServerSettings:
    parser = argparse.ArgumentParser()
    add_common_args(parser, "PROXAL_PROXY", env)
    return server_settings(parser.parse_args(argv))


def test_settings_from_flags_and_environment(pki: Pki, tmp_path: Path) -> None:
    assert _settings([], {}).security == ServerSecurity()  # plaintext, no token by default
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{OLD_TOKEN}\n\n")
    env = {
        "PROXAL_TLS_CERT": str(tmp_path / "not-this.crt"),
        "PROXAL_PROXY_TLS_CERT": str(pki.server_cert),  # the service's own name wins
        "PROXAL_TLS_KEY": str(pki.server_key),
        "PROXAL_TLS_CLIENT_CA": str(pki.ca),
        "PROXAL_AUTH_TOKEN": f"{TOKEN}, ",
        "PROXAL_AUTH_TOKEN_FILE": str(token_file),
    }
    security = _settings([], env).security
    assert security == ServerSecurity(pki.server_cert, pki.server_key, pki.ca, (TOKEN, OLD_TOKEN))
    assert TOKEN not in repr(security)
    flags = _settings(["--tls-client-ca", str(pki.rogue_ca)], env).security
    assert flags.client_ca == pki.rogue_ca


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("cert-only", "--tls-cert and --tls-key"),
        ("client-ca-only", "needs TLS"),
        ("missing-cert", "cannot read --tls-cert"),
        ("mismatched-key", "are not a PEM certificate and its unencrypted private key"),
        ("encrypted-key", "gRPC needs an unencrypted key"),
        ("not-a-ca", "is not a PEM CA certificate"),
        ("empty-token-file", "is empty"),
        ("blank-token-file", "holds no token"),
        ("missing-token-file", "cannot read token file"),
        ("short-token", "use at least 16"),
        ("bad-token", "characters a token cannot carry"),
    ],
)
def test_bad_settings_fail_at_start(pki: Pki, tmp_path: Path, case: str, message: str) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "blank").write_text(" ,\n")
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    (tmp_path / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    argv, env = {
        "cert-only": (["--tls-cert", str(pki.server_cert)], {}),
        "client-ca-only": (["--tls-client-ca", str(pki.ca)], {}),
        "missing-cert": (["--tls-cert", str(tmp_path / "nope.crt"), *tls[2:]], {}),
        "mismatched-key": (
            ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key)],
            {},
        ),
        "encrypted-key": ([*tls[:2], "--tls-key", str(tmp_path / "encrypted.key")], {}),
        "not-a-ca": ([*tls, "--tls-client-ca", str(pki.server_key)], {}),
        "empty-token-file": (["--auth-token-file", str(tmp_path / "empty")], {}),
        "blank-token-file": (["--auth-token-file", str(tmp_path / "blank")], {}),
        "missing-token-file": (["--auth-token-file", str(tmp_path / "nope")], {}),
        "short-token": ([], {"PROXAL_AUTH_TOKEN": "REPLACE_ME"}),
        "bad-token": ([], {"PROXAL_AUTH_TOKEN": "a token with spaces"}),
    }[case]
    with pytest.raises(SystemExit) as info:
        _settings(argv, env)
    assert message in str(info.value.code)
    assert TOKEN not in str(info.value.code)


def test_client_security_from_environment(pki: Pki, tmp_path: Path) -> None:
    assert ClientSecurity.from_env({}) == ClientSecurity()
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n{OLD_TOKEN}\n")
    env = {
        "PROXAL_TLS_CA": str(pki.ca),
        "PROXAL_TLS_CLIENT_CERT": str(pki.client_cert),
        "PROXAL_TLS_CLIENT_KEY": str(pki.client_key),
        "PROXAL_AUTH_TOKEN_FILE": str(token_file),
    }
    client = ClientSecurity.from_env(env)
    assert client == ClientSecurity(pki.ca, pki.client_cert, pki.client_key, TOKEN)
    assert TOKEN not in repr(client)
    # a client sends the first token, so "new,old" on both sides rotates
    assert ClientSecurity.from_env({"PROXAL_AUTH_TOKEN": f"{OLD_TOKEN},{TOKEN}"}).token == OLD_TOKEN
    with pytest.raises(SecurityConfigError, match="go together"):
        ClientSecurity.from_env({"PROXAL_TLS_CA": str(pki.ca), "PROXAL_TLS_CLIENT_CERT": "x"})
    with pytest.raises(SecurityConfigError, match="PROXAL_TLS_CA"):
        ClientSecurity(cert=pki.client_cert, key=pki.client_key)


def test_exposed_servers_warn(caplog: pytest.LogCaptureFixture, pki: Pki) -> None:
    caplog.set_level(logging.WARNING, "proxal.runtime.security")
    ServerSecurity(tokens=(TOKEN,)).warn_if_exposed("0.0.0.0")
    ServerSecurity().warn_if_exposed("10.1.2.3")
    for loopback in ("127.0.0.1", "localhost", "::1"):
        ServerSecurity().warn_if_exposed(loopback)
    secured = ServerSecurity(pki.server_cert, pki.server_key, tokens=(TOKEN,))
    secured.warn_if_exposed("0.0.0.0")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "in plaintext on 0.0.0.0" in messages[0]
    assert "no authentication on 10.1.2.3" in messages[1]


def test_healthcheck_cli_reads_the_client_environment(serve: Serve, pki: Pki) -> None:
    server, _ = serve(ServerSecurity(pki.server_cert, pki.server_key, pki.ca, tokens=(TOKEN,)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXAL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "protos")])
    command = [sys.executable, "-m", "proxal.runtime.healthcheck", server.address, SERVICE]
    plain = subprocess.run(
        [*command, "--timeout", "0.5"], env=env, capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 1
    env |= {
        "PROXAL_TLS_CA": str(pki.ca),
        "PROXAL_TLS_CLIENT_CERT": str(pki.client_cert),
        "PROXAL_TLS_CLIENT_KEY": str(pki.client_key),
    }
    secure = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert secure.returncode == 0, secure.stderr
    assert "SERVING" in secure.stdout
