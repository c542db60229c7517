"""Real servers for fuzzing: loopback port 0, a real LanceDB store in a temporary directory.

Each server takes small limits (message size, upload size, text length, ids per array) so
generated requests reach them cheaply; the limits are the same code paths as the defaults.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.encoder_service.encoders import DEFAULT_MODEL, TORCH, EncoderCache
from proxal.encoder_service.pipeline import embed_pool
from proxal.encoder_service.servicer import DEFAULT_MAX_LENGTH, EncoderServicer
from proxal.encoder_service.settings import EncoderSettings
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.proxy_service.cache import VersionCache
from proxal.proxy_service.limits import RequestLimits
from proxal.proxy_service.servicer import ProxyServicer
from proxal.runtime.models import minilm_l6_path
from proxal.runtime.server import RunningServer, ServerSettings, grpc_channel_options, start_server
from proxal.store import EncoderInfo, Store, VersionInfo
from threadpoolctl import threadpool_limits

from tests.conftest import BANKING77, add_blobs_version, read_jsonl

STOP_WAIT_S = 10.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_UPLOAD_BYTES = 64 * 1024
MAX_TEXT_CHARS = 2_000
MAX_IDS = 100_000

Snapshot = dict[str, list[tuple[str, str, int, int, bool]]]


def snapshot(store: Store, pools: list[str]) -> Snapshot:
    """Every version (any status) of `pools`: (name, status, table version, rows, pinned)."""
    return {
        pool: [
            (v.version, v.status, v.table_version, v.row_count, v.pinned)
            for v in store.list_versions(pool, include_incomplete=True)
        ]
        for pool in pools
    }


def stop(running: RunningServer) -> None:
    """Stop now, waiting at most STOP_WAIT_S: gRPC Python may never finish a stream whose
    first message did not parse (docs/hardening.md, "Known gaps")."""
    running.health.enter_graceful_shutdown()
    running.server.stop(0).wait(STOP_WAIT_S)


# ------------------------------------------------------------------ encoder
@dataclass
class EncoderWorld:
    """The encoder under fuzz, its store and checkpoint root.

    Pool "fuzz" (12 rows, splits train and test) holds v1 and v2 (complete, pinned), v3
    (deleted), v4 (failed) and v5 (running); pool "tiny" (2 rows) is where valid EmbedPool
    requests embed. `expected` is what the store must hold for "fuzz".
    """

    running: RunningServer
    channel: grpc.Channel
    store: Store
    root: Path
    expected: Snapshot = field(default_factory=dict)
    v1: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def repin(self) -> None:
        for version in ("v1", "v2"):
            self.store.pin_version("fuzz", version)


def build_checkpoint_root(root: Path, outside: Path) -> None:
    """Broken checkpoints of every kind (all cheap to reject) under `root`."""
    base = minilm_l6_path()
    (root / "pickled.bin").write_bytes(b"\x80\x04K\x01.")
    (root / "pickled").mkdir()
    shutil.copyfile(base / "config.json", root / "pickled" / "config.json")
    (root / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    (root / "garbage.safetensors").write_bytes(os.urandom(256))
    (root / "empty").mkdir()
    (root / "bad-json").mkdir()
    (root / "bad-json" / "config.json").write_text("{not json")
    (root / "bad-json" / "model.safetensors").write_bytes(os.urandom(64))
    (root / "hf-garbage").mkdir()
    shutil.copyfile(base / "config.json", root / "hf-garbage" / "config.json")
    (root / "hf-garbage" / "model.safetensors").write_bytes(b"\x08" + os.urandom(64))
    (root / "gpt").mkdir()
    (root / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (root / "gpt" / "model.safetensors").write_bytes(os.urandom(64))
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text("{}")
    (root / "adapter" / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    (root / "linked").mkdir()
    (root / "linked" / "etc").symlink_to("/etc", target_is_directory=True)


CHECKPOINTS = [
    "pickled.bin",
    "pickled",
    "garbage.safetensors",
    "empty",
    "bad-json",
    "hf-garbage",
    "gpt",
    "adapter",
    "escape",
    "escape/model.safetensors",
    "loop",
    "linked",
    "linked/etc/passwd",
    "missing",
    "../outside",
    "empty/../../outside",
]


@pytest.fixture(scope="module")
def encoder_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EncoderWorld]:
    base = tmp_path_factory.mktemp("fuzz-encoder")
    root = base / "checkpoints"
    root.mkdir()
    (base / "outside").mkdir()
    build_checkpoint_root(root, base / "outside")
    store = Store(str(base / "store"))
    rows = read_jsonl(BANKING77 / "train.jsonl", limit=12)
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    store.add_pool_rows("fuzz", "train", texts[:8], labels[:8])
    store.add_pool_rows("fuzz", "test", texts[8:], labels[8:])
    store.add_pool_rows("tiny", "train", ["hello", "world"], ["a", None])
    encoders = EncoderCache(base / "onnx", capacity=4)
    encoder = encoders.get(DEFAULT_MODEL, TORCH, DEFAULT_MAX_LENGTH)
    for _ in range(3):
        embed_pool(store, "fuzz", encoder, batch_size=8)
    store.delete_version("fuzz", "v3")
    store.begin_embedding("fuzz", EncoderInfo("failed", TORCH, 384, 16)).abort()
    store.begin_embedding("fuzz", EncoderInfo("running", TORCH, 384, 16))  # left running
    settings = EncoderSettings(
        server=ServerSettings(port=0, max_workers=4, max_message_bytes=MAX_MESSAGE_BYTES),
        store=store.uri,
        onnx_cache=base / "onnx",
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_text_chars=MAX_TEXT_CHARS,
        checkpoint_root=root,
    )
    servicer = EncoderServicer(store, settings, encoders)
    running = start_server(
        settings.server,
        lambda server: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server),
        [encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name],
    )
    channel = grpc.insecure_channel(running.address, options=grpc_channel_options())
    world = EncoderWorld(running, channel, store, root)
    world.repin()
    world.expected = snapshot(store, ["fuzz"])
    world.v1 = store.read_embeddings("fuzz", "v1")[1]
    yield world
    channel.close()
    stop(running)


# ------------------------------------------------------------------ proxy
PROXY_ROWS, PROXY_DIM, PROXY_CLASSES = 400, 16, 4


@dataclass
class ProxyWorld:
    """The proxy under fuzz: pool "blobs" (ids 0..399, 4 classes) with v1 complete and v2
    running; pool "bare" has rows but no version."""

    running: RunningServer
    channel: grpc.Channel
    store: Store
    labels: np.ndarray
    versions: list[VersionInfo]


@pytest.fixture(scope="module")
def proxy_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyWorld]:
    store = Store(str(tmp_path_factory.mktemp("fuzz-proxy") / "store"))
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 0.6, size=(PROXY_CLASSES, PROXY_DIM))
    labels = rng.integers(0, PROXY_CLASSES, size=PROXY_ROWS)
    vectors = (centers[labels] + rng.normal(size=(PROXY_ROWS, PROXY_DIM))).astype(np.float32)
    add_blobs_version(store, "blobs", vectors, labels)
    store.begin_embedding("blobs", EncoderInfo("running", "none", PROXY_DIM, 16))
    store.add_pool_rows("bare", "train", ["a", "b"], [None, None])
    servicer = ProxyServicer(
        VersionCache(store, max_versions=2, max_models=8),
        score_threads=1,
        limits=RequestLimits(max_ids=MAX_IDS),
    )
    settings = ServerSettings(port=0, max_workers=4, max_message_bytes=MAX_MESSAGE_BYTES)
    running = start_server(
        settings,
        lambda server: proxy_pb2_grpc.add_ProxyServiceServicer_to_server(servicer, server),
        [proxy_pb2.DESCRIPTOR.services_by_name["ProxyService"].full_name],
    )
    channel = grpc.insecure_channel(running.address, options=grpc_channel_options())
    with threadpool_limits(limits=1, user_api="blas"):  # as `python -m proxal.proxy_service` runs
        yield ProxyWorld(
            running, channel, store, labels, store.list_versions("blobs", include_incomplete=True)
        )
    channel.close()
    stop(running)
