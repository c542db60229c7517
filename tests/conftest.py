"""Fixtures shared by all tests: a real store on tmp_path and real Banking77 rows."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")

REPO = Path(__file__).resolve().parent.parent
BANKING77 = REPO / "orchestrator" / "demo" / "data" / "banking77"


@contextmanager
def stops_cleanly(process: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """`process` for the block; then SIGTERM, which must end it with status 0. Killed if
    the block fails, so no server outlives its test."""
    try:
        yield process
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script (e.g. a bench/ file) as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pretrained() -> dict[str, Any]:
    """MiniLM-L6's pretrained weights as a state dict (to check what training left alone)."""
    from proxal.runtime.models import minilm_l6_path
    from safetensors.torch import load_file

    return load_file(str(minilm_l6_path() / "model.safetensors"))


def banking_slice(classes: tuple[str, ...], per_class: int) -> tuple[list[str], list[int]]:
    """The first `per_class` Banking77 training texts of each of `classes` → texts, class ids
    (indices into `classes`)."""
    texts: list[str] = []
    labels: list[int] = []
    taken = dict.fromkeys(classes, 0)
    for row in read_jsonl(BANKING77 / "train.jsonl"):
        name = row["label"]
        if name in taken and taken[name] < per_class:
            taken[name] += 1
            texts.append(row["text"])
            labels.append(classes.index(name))
    return texts, labels


def add_blobs_version(store: Any, pool: str, vectors: Any, labels: Any) -> str:
    """Add rows 0..n-1 of a labeled synthetic pool with these vectors (n, d) to a real
    store as one complete embedding version; returns its name."""
    from proxal.store import EncoderInfo

    n = len(vectors)
    store.add_pool_rows(pool, "train", [f"text {i}" for i in range(n)], [f"c{c}" for c in labels])
    writer = store.begin_embedding(
        pool, EncoderInfo("synthetic-blobs", "none", vectors.shape[1], 16)
    )
    writer.write(list(range(n)), vectors)
    return str(writer.commit().version)


def add_session_pool(
    store: Any,
    pool: str,
    classes: list[str],
    n_train: int,
    n_test: int = 0,
    dim: int = 16,
    seed: int = 0,
) -> list[str]:
    """A labelable pool for session tests: well-separated Gaussian blobs, one per class,
    in splits train (ids 0..n_train-1, texts "train text i") and test, embedded as v1.
    Returns the gold label of every id."""
    from proxal.store import EncoderInfo

    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, len(classes), size=n)
    x = rng.normal(scale=4.0, size=(len(classes), dim))[y] + rng.normal(size=(n, dim))
    labels = [classes[i] for i in y]
    store.add_pool_rows(
        pool, "train", [f"train text {i}" for i in range(n_train)], labels[:n_train]
    )
    if n_test:
        store.add_pool_rows(
            pool, "test", [f"test text {i}" for i in range(n_test)], labels[n_train:]
        )
    with store.begin_embedding(pool, EncoderInfo("synthetic", "none", dim, 0)) as writer:
        writer.write(np.arange(n), x.astype(np.float32))
        writer.commit()
    return labels


@pytest.fixture
def store(tmp_path: Path):
    """A real, empty LanceDB-backed store in a temporary directory."""
    from proxal.store import Store

    return Store(str(tmp_path / "store"))


@pytest.fixture(scope="session")
def banking_rows() -> list[dict[str, str]]:
    """600 real Banking77 training rows (every 16th row: many classes, all real text)."""
    rows = read_jsonl(BANKING77 / "train.jsonl")
    return rows[::16][:600]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the test run (tests/postgres.py), stopped at the end."""
    from tests.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """A fresh, empty PostgreSQL database on the test run's server -> its URL."""
    return str(postgres_server.database())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A session database of each kind: a SQLite file under tmp_path, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    return str(request.getfixturevalue("postgres_url"))
