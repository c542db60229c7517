"""deploy/docker/venv_layers.py prune: what the images' runtime venv leaves out, on a fake venv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "venv_layers.py"


def _file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _fake_venv(root: Path) -> Path:
    """A venv with pip, setuptools, pyarrow (Flight, copies of a library) and numpy."""
    site = root / "lib" / "python3.11" / "site-packages"
    for rel in (
        "bin/pip",
        "bin/pip3.11",
        "lib/python3.11/site-packages/pip/__init__.py",
        "lib/python3.11/site-packages/pip-25.0.dist-info/RECORD",
        "lib/python3.11/site-packages/setuptools/__init__.py",
        "lib/python3.11/site-packages/setuptools-80.0.dist-info/RECORD",
        "lib/python3.11/site-packages/pkg_resources/__init__.py",
        "lib/python3.11/site-packages/_distutils_hack/__init__.py",
        "lib/python3.11/site-packages/distutils-precedence.pth",
        "lib/python3.11/site-packages/pyarrow/libarrow_flight.so.2600",
        "lib/python3.11/site-packages/pyarrow/_flight.cpython-311-x86_64-linux-gnu.so",
        "lib/python3.11/site-packages/pyarrow/libarrow_python_flight.so.2600.1.0",
    ):
        _file(root / rel, b"x" * 100)
    for name in ("libarrow_python.so", "libarrow_python.so.2600", "libarrow_python.so.2600.1.0"):
        _file(site / "pyarrow" / name, b"python library")
    _file(site / "pyarrow" / "libarrow.so.2600", b"arrow")
    _file(site / "pyarrow" / "libarrow.so", b"another build")  # differs: stays a file
    _file(site / "pyarrow" / "flight.py", b"from pyarrow._flight import *\n")
    _file(site / "numpy" / "__init__.py", b"")
    _file(root / "bin" / "python3", b"interpreter")
    return site


def test_prune_drops_installers_and_flight_and_links_library_copies(tmp_path: Path) -> None:
    site = _fake_venv(tmp_path)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "prune", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("prune: ") and "MB freed" in done.stderr
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir())
    site_rel = "lib/python3.11/site-packages"
    assert left == [
        "bin/python3",
        f"{site_rel}/numpy/__init__.py",
        f"{site_rel}/pyarrow/flight.py",
        f"{site_rel}/pyarrow/libarrow.so",
        f"{site_rel}/pyarrow/libarrow.so.2600",
        f"{site_rel}/pyarrow/libarrow_python.so",
        f"{site_rel}/pyarrow/libarrow_python.so.2600",
        f"{site_rel}/pyarrow/libarrow_python.so.2600.1.0",
    ]
    pyarrow = site / "pyarrow"
    for copy in ("libarrow_python.so", "libarrow_python.so.2600.1.0"):
        assert (pyarrow / copy).is_symlink()
        assert (pyarrow / copy).readlink() == Path("libarrow_python.so.2600")
        assert (pyarrow / copy).read_bytes() == b"python library"
    assert not (pyarrow / "libarrow_python.so.2600").is_symlink()
    assert not (pyarrow / "libarrow.so").is_symlink()
