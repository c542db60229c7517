"""The orchestrator's layers, checked on its source (imports, read with `ast`).

- `rpc/` is the only place that imports grpc or the protos; the CLI and the demo wire
  things together through it, domain code never does.
- Domain layers (engine, sessions, successor, analysis) import neither `rpc/` nor `cli/`.
- No service imports another service's internals: they meet in the protos and the store.
- torch and transformers only where training happens (successor/, engine/asvp.py).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORCH = ROOT / "orchestrator"
PKG = "proxal.orchestrator_service"
PROTOS = ("grpc", "proxal.orchestrator.v1", "proxal.proxy.v1", "proxal.encoder.v1")
DOMAIN = ("engine", "sessions", "successor", "analysis", "labelstudio")
TRAINING = ("torch", "transformers", "peft")


def _imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _modules(layer: str = "") -> list[Path]:
    return sorted((ORCH / layer).rglob("*.py"))


def _offenders(paths: list[Path], banned: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} imports {module}"
        for path in paths
        for module in _imports(path)
        if _under(module, banned)
    ]


def test_the_layers_exist() -> None:
    for layer in ("cli", "rpc", "engine", "sessions", "successor", "analysis", "demo"):
        assert (ORCH / layer / "__init__.py").is_file(), layer
    assert len(_modules("rpc")) >= 5  # the checks below would pass vacuously on an empty tree


def test_only_rpc_touches_grpc_and_the_protos() -> None:
    outside = [p for p in _modules() if p.relative_to(ORCH).parts[0] != "rpc"]
    assert _offenders(outside, PROTOS) == []


def test_domain_layers_import_neither_rpc_nor_cli() -> None:
    banned = (f"{PKG}.rpc", f"{PKG}.cli", f"{PKG}.demo")
    domain = [p for layer in DOMAIN for p in _modules(layer)]
    assert _offenders(domain, banned) == []


@pytest.mark.parametrize(
    ("folder", "others"),
    [
        ("orchestrator", ("proxal.encoder_service", "proxal.proxy_service")),
        ("encoder_service", ("proxal.orchestrator_service", "proxal.proxy_service")),
        ("proxy_service", ("proxal.orchestrator_service", "proxal.encoder_service")),
    ],
)
def test_no_service_imports_another_services_internals(folder: str, others: tuple) -> None:
    assert _offenders(sorted((ROOT / folder).rglob("*.py")), others) == []


def test_torch_only_where_training_happens() -> None:
    allowed = {ORCH / "engine" / "asvp.py"}
    outside = [
        p for p in _modules() if p.relative_to(ORCH).parts[0] != "successor" and p not in allowed
    ]
    assert _offenders(outside, TRAINING) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import grpc\n    from proxal.proxy.v1 import proxy_pb2\n")
    assert len(_offenders([bad], PROTOS)) == 2


SESSION_WRITES = re.compile(
    r"\bstore\.(create_session|update_session|delete_session|append_labels|"
    r"append_label_events|append_lease_events|record_round)\("
)


def test_the_engine_is_the_one_writer_of_sessions_rounds_and_labels() -> None:
    writers = {str(p.relative_to(ROOT)) for p in _modules() if SESSION_WRITES.search(p.read_text())}
    assert writers == {"orchestrator/engine/loop.py"}
