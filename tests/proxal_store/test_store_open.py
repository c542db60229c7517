"""Opening a store: only what writes new pools creates one; a mistyped path or a file is a
one-line refusal naming the path, in the library and in the services that start on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.runtime.errors import InvalidArgumentError, NotFoundError, UnavailableError
from proxal.store import Store
from proxal.store.store import local_store_path

from tests.conftest import REPO


def test_a_missing_store_is_refused_unless_created(tmp_path: Path) -> None:
    typo = tmp_path / "proxal-stor"
    with pytest.raises(NotFoundError, match=f"no store at '{typo}'"):
        Store(str(typo), create=False)
    assert not typo.exists()  # nothing left behind
    made = Store(str(tmp_path / "new" / "store"), create=True)
    assert Path(made.uri).is_dir()
    assert Store(made.uri, create=False).uri == made.uri  # an existing one opens


def test_a_file_is_not_a_store(tmp_path: Path) -> None:
    a_file = tmp_path / "store"
    a_file.write_text("not a store")
    for create in (True, False):
        with pytest.raises(InvalidArgumentError, match="is a file, not a store directory"):
            Store(str(a_file), create=create)
    with pytest.raises(InvalidArgumentError, match="cannot create the store directory"):
        Store(str(a_file / "under"), create=True)
    assert a_file.read_text() == "not a store"


def test_object_storage_uris_are_not_checked_locally() -> None:
    assert local_store_path("s3://bucket/prefix") is None
    assert local_store_path("file:///tmp/s") == Path("/tmp/s")
    assert local_store_path("./proxal-store") == Path("proxal-store")


def _service(module: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXAL_")}
    return subprocess.run(
        [sys.executable, "-m", module, "--port", "0", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**env, "LANCE_LOG": "error"},
    )


@pytest.mark.parametrize(
    ("module", "store", "message"),
    [
        ("proxy_service", "missing", "proxal-proxy: no store at '{path}'"),
        ("proxy_service", "a-file", "proxal-proxy: the store path '{path}' is a file"),
        ("encoder_service", "a-file", "proxal-encoder: the store path '{path}' is a file"),
    ],
)
def test_services_refuse_a_bad_store_at_start_with_one_line(
    tmp_path: Path, module: str, store: str, message: str
) -> None:
    path = tmp_path / store
    if store == "a-file":
        path.write_text("x")
    done = _service(module, path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(path=path)), done.stderr
    assert store != "missing" or not path.exists()


def test_a_service_that_refuses_to_start_says_why(tmp_path: Path) -> None:
    """What `proxal demo` and `proxal asm` see when a service they start refuses its store."""
    missing = tmp_path / "gone"
    with pytest.raises(
        UnavailableError, match=f"before serving: proxal-proxy: no store at '{missing}'"
    ):
        ServiceProcess("proxy_service", str(missing)).start()
