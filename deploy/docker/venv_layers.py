"""Split proxal's image venv into two layers: the proxy's, and what torch & co. add to it.

Used by deploy/docker/Dockerfile.{proxy,encoder,orchestrator} inside the build (stdlib
only, Python 3.11+):

    python3 venv_layers.py requirements pyproject.toml proxy > req.txt   # an extra's list
    python3 venv_layers.py trim /opt/venv                # drop tests, headers, Cython sources
    python3 venv_layers.py manifest /opt/venv /opt/core.json            # {path: sha256}
    python3 venv_layers.py split /opt/venv /opt/core.json /opt/delta    # move new files out
    python3 venv_layers.py prune /opt/venv      # drop the installers and unloaded pyarrow parts

`split` moves every file (or symlink) of the venv that the manifest does not list with the
same content into the same relative path under the destination, so that copying the
proxy's venv and then the destination over it rebuilds the full venv. It fails when a file
of the manifest is gone (pip removed or upgraded part of the proxy's layer), since the two
layers would then not add up to the venv that was tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

# Never imported at run time; safe to drop from an image.
TRIM_DIRS = {"tests"}
TRIM_SUFFIXES = (".pyx", ".pxd", ".pxi", ".h", ".hpp", ".cc", ".cpp", ".c")
TRIM_TREES = ("pyarrow/include", "pyarrow/src", "numpy/_core/include", "numpy/_core/lib")
# What no proxal service loads at run time (measured: /proc/self/maps and sys.modules of the
# proxy after serving, the smoke run for the encoder and orchestrator), relative to the venv:
# the installers (nothing installs at run time; the build stages keep them) and pyarrow's
# Flight RPC libraries (lance and the store use none of it). Shared libraries lose their
# symbol tables (`strip --strip-unneeded`, binutils), except the ones auditwheel vendors into
# `<dist>.libs/` (patchelf-edited: stripping them breaks their load, "ELF load command
# address/offset not page-aligned").
SONAME = re.compile(r"lib.+\.so\.\d+")
PRUNE_GLOBS = (
    "bin/pip",
    "bin/pip3*",
    "bin/wheel",
    "lib/python3*/site-packages/pip",
    "lib/python3*/site-packages/pip-*.dist-info",
    "lib/python3*/site-packages/setuptools",
    "lib/python3*/site-packages/setuptools-*.dist-info",
    "lib/python3*/site-packages/pkg_resources",
    "lib/python3*/site-packages/_distutils_hack",
    "lib/python3*/site-packages/distutils-precedence.pth",
    "lib/python3*/site-packages/wheel",
    "lib/python3*/site-packages/wheel-*.dist-info",
    "lib/python3*/site-packages/pyarrow/libarrow_flight.so*",
    "lib/python3*/site-packages/pyarrow/libarrow_python_flight.so*",
    "lib/python3*/site-packages/pyarrow/_flight.*.so",
)


def requirements(pyproject: Path, extra: str) -> list[str]:
    """The requirement strings of an extra ('core': the project's own dependencies)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    if extra == "core":
        return list(project["dependencies"])
    return list(project["optional-dependencies"][extra])


def trim(venv: Path) -> int:
    """Remove test suites, C headers and Cython sources under site-packages; bytes freed."""
    freed = 0
    for site in venv.glob("lib/python3*/site-packages"):
        for tree in TRIM_TREES:
            freed += _remove(site / tree)
        for path in sorted(site.rglob("*"), reverse=True):  # a tree's files before the tree
            if _trimmed(path):
                freed += _remove(path)
    return freed


def _trimmed(path: Path) -> bool:
    """A test-suite directory, or a header / C / Cython source file."""
    if path.is_symlink():
        return False
    return path.name in TRIM_DIRS if path.is_dir() else path.suffix in TRIM_SUFFIXES


def _remove(path: Path) -> int:
    """Delete a file or a tree; its size in bytes (0 if absent)."""
    if path.is_symlink() or path.is_file():
        size = path.lstat().st_size
        path.unlink()
        return size
    if not path.is_dir():
        return 0
    size = sum(f.lstat().st_size for f in path.rglob("*") if f.is_file())
    shutil.rmtree(path)
    return size


def prune(venv: Path) -> int:
    """Remove PRUNE_GLOBS, and turn byte-identical copies of a shared library into symlinks
    to its soname file (wheels cannot hold links: ``libx.so`` = ``libx.so.N`` =
    ``libx.so.N.M.K``); bytes freed."""
    freed = sum(_remove(path) for glob in PRUNE_GLOBS for path in sorted(venv.glob(glob)))
    freed += _strip(venv)
    for soname in sorted(venv.glob("lib/python3*/site-packages/*/lib*.so.*")):
        if soname.is_symlink() or not SONAME.fullmatch(soname.name):
            continue
        stem = soname.name.rsplit(".", 1)[0]  # libx.so
        for copy in [soname.with_name(stem), *soname.parent.glob(soname.name + ".*")]:
            if copy.is_file() and not copy.is_symlink() and _digest(copy) == _digest(soname):
                freed += _remove(copy)
                copy.symlink_to(soname.name)
    return freed


def _strip(venv: Path) -> int:
    """`strip --strip-unneeded` every shared library outside `*.libs/`; bytes freed."""
    libs = [
        p
        for p in sorted(venv.glob("lib/python3*/site-packages/**/*.so*"))
        if _is_elf(p) and not any(d.endswith(".libs") for d in p.parts)
    ]
    before = sum(p.stat().st_size for p in libs)
    for start in range(0, len(libs), 100):
        subprocess.run(
            ["strip", "--strip-unneeded", *map(str, libs[start : start + 100])], check=True
        )
    return before - sum(p.stat().st_size for p in libs)


def _is_elf(path: Path) -> bool:
    """A regular file (not a symlink) that starts with the ELF magic number."""
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def _digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a symlink's target string."""
    if path.is_symlink():
        return "link:" + os.readlink(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(venv: Path) -> list[Path]:
    return [p for p in venv.rglob("*") if p.is_symlink() or p.is_file()]


def manifest(venv: Path) -> dict[str, str]:
    """{path relative to the venv: digest} for every file and symlink."""
    return {str(p.relative_to(venv)): _digest(p) for p in _files(venv)}


def split(venv: Path, listed: dict[str, str], dest: Path) -> int:
    """Move files new or changed since `listed` to dest; the number moved."""
    missing = [rel for rel in listed if not os.path.lexists(venv / rel)]
    if missing:
        dists = sorted({rel.split("/")[3] for rel in missing if rel.count("/") > 3})
        raise SystemExit(
            f"split: {len(missing)} files of the proxy layer were removed or replaced by the"
            f" later install (install these in the proxy layer first): {dists[:20]}"
        )
    moved = 0
    for path in _files(venv):
        rel = str(path.relative_to(venv))
        if listed.get(rel) == _digest(path):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        moved += 1
    return moved


def main(argv: list[str]) -> int:
    """Dispatch the subcommands above; exit status."""
    match argv:
        case ["requirements", pyproject, extra]:
            print("\n".join(requirements(Path(pyproject), extra)))
        case ["trim", venv]:
            print(f"trim: {trim(Path(venv)) / 1e6:.0f} MB freed", file=sys.stderr)
        case ["manifest", venv, out]:
            Path(out).write_text(json.dumps(manifest(Path(venv))))
        case ["split", venv, listed, dest]:
            count = split(Path(venv), json.loads(Path(listed).read_text()), Path(dest))
            print(f"split: {count} files moved to {dest}", file=sys.stderr)
        case ["prune", venv]:
            print(f"prune: {prune(Path(venv)) / 1e6:.0f} MB freed", file=sys.stderr)
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
