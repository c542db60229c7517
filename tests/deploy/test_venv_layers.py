"""deploy/docker/venv_layers.py prune: what the images' runtime venv leaves out, on a fake venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.skipif(shutil.which("strip") is None, reason="needs binutils' strip")
def test_prune_strips_extensions_but_not_vendored_libraries(tmp_path: Path) -> None:
    """A real extension module loses its symbol table and still imports; a library under
    `<dist>.libs/` (patchelf-edited by auditwheel) is left byte for byte."""
    import sklearn.__check_build._check_build as ext

    original = Path(ext.__file__).read_bytes()
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    module = site / "pkg" / Path(ext.__file__).name
    vendored = site / "pkg.libs" / "libvendored-1234.so"
    for path in (module, vendored):
        _file(path, original)
    subprocess.run([sys.executable, str(SCRIPT), "prune", str(tmp_path)], check=True)
    assert vendored.read_bytes() == original
    stripped = module.read_bytes()
    assert len(stripped) < len(original) if b".symtab" in original else stripped == original
    load = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('_check_build', sys.argv[1])\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    )
    subprocess.run([sys.executable, "-c", load, str(module)], check=True)
