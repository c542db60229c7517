"""`proxal up` as a real subprocess: the encoder, 2 proxy replicas and the orchestrator
serve on the printed addresses; Ctrl-C stops them all; a child that dies stops the rest."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxal.orchestrator_service.cli.up import READY
from proxal.runtime.healthcheck import check

from tests.conftest import REPO

SERVICE = re.compile(r"^  (\w+(?: \d+)?)\s+(127\.0\.0\.1:\d+)  \(pid (\d+)\)$")


def _default_sigint() -> None:
    """Ctrl-C as at a terminal: a test run started in the background (`cmd &` in a script)
    ignores SIGINT, and a child would inherit that and never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, tuple[str, int]]]]:
    """A running `proxal up --free-ports --proxies 2` and its services: name → (address,
    pid), read from its ready block."""
    process = subprocess.Popen(
        [sys.executable, "-m", "proxal.orchestrator_service", "up", "--free-ports",
         "--proxies", "2", "--store", str(tmp_path / "store"), "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert process.stdout is not None
    services: dict[str, tuple[str, int]] = {}
    try:
        lines = iter(process.stdout.readline, "")
        assert any(line.strip() == READY for line in lines), process.stderr.read()  # type: ignore[union-attr]
        for line in lines:
            if line.startswith("Ctrl-C"):
                break
            match = SERVICE.match(line.rstrip("\n"))
            if match:
                services[match[1]] = (match[2], int(match[3]))
        yield process, services
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for _, pid in services.values():  # never leave a server behind a failed test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _gone(pid: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_up_serves_every_service_and_ctrl_c_stops_them(
    up: tuple[subprocess.Popen[str], dict[str, tuple[str, int]]],
) -> None:
    process, services = up
    assert sorted(services) == ["encoder", "orchestrator", "proxy 1", "proxy 2"]
    for address, _ in services.values():
        serving, status = check(address, timeout=5.0)
        assert serving, f"{address}: {status}"
    from proxal import Client

    with Client(services["orchestrator"][0]) as client:
        assert client.list_sessions() == []  # the orchestrator answers over its proxies
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    for name, (_, pid) in services.items():
        assert _gone(pid), f"{name} (pid {pid}) still runs after proxal up stopped"


def test_a_service_that_dies_stops_the_others_and_fails(
    up: tuple[subprocess.Popen[str], dict[str, tuple[str, int]]],
) -> None:
    process, services = up
    address, pid = services["proxy 2"]
    os.kill(pid, signal.SIGKILL)
    assert process.wait(timeout=60) == 1
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert stderr.startswith(
        f"proxal up: proxy 2 exited with code -9 (it served on {address}): "
    ), stderr
    assert stderr.rstrip().endswith("; stopped the other services")
    for name, (_, other) in services.items():
        assert _gone(other), f"{name} (pid {other}) still runs"
