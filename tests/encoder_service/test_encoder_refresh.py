"""RefreshFromCheckpoint end to end: real server and store, real MiniLM-L6 checkpoints.

The checkpoints are built in a temporary checkpoint root: a perturbed HF model directory,
a LoRA adapter, the same encoder as prefixed safetensors state dicts, and broken ones.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.encoder_service.encoders import EncoderCache
from proxal.encoder_service.servicer import EncoderServicer
from proxal.encoder_service.settings import EncoderSettings
from proxal.runtime.models import minilm_l6_path
from proxal.runtime.server import RunningServer, ServerSettings, grpc_channel_options, start_server
from proxal.store import Store
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2Model

POOL = "refresh"
ROWS = 40
LABELS = {"label_count": 12, "label_set_hash": "ab" * 32}


@dataclass
class RefreshServer:
    store: Store
    stub: encoder_pb2_grpc.EncoderServiceStub
    root: Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_checkpoints(root: Path) -> None:
    """Every checkpoint the tests refresh from, good and bad, under `root`."""
    base_dir = minilm_l6_path()
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(base_dir)
    with torch.no_grad():  # a small fine-tuning-like change to one layer
        layer = model.encoder.layer[5]
        for param in (layer.attention.self.query.weight, layer.output.dense.weight):
            param.add_(0.02 * torch.randn_like(param))
    model.save_pretrained(root / "hf")
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(root / "hf")

    # The same encoder as a proxal successor saves it: under `encoder.`, next to a head.
    state = {f"encoder.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state["head.weight"], state["head.bias"] = torch.zeros(3, 384), torch.zeros(3)
    save_file(state, str(root / "successor.safetensors"))
    (root / "successor").mkdir()
    save_file(state, str(root / "successor" / "model.safetensors"))
    config = {"format_version": 1, "num_classes": 3, "encoder_config": model.config.to_dict()}
    (root / "successor" / "config.json").write_text(json.dumps(config))

    lora_config = LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
    get_peft_model(AutoModel.from_pretrained(base_dir), lora_config).save_pretrained(root / "lora")

    wide = BertConfig(
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=64,
        vocab_size=30522,
    )
    BertModel(wide).save_pretrained(root / "bert768")
    get_peft_model(BertModel(wide), LoraConfig(r=2, target_modules=["query"])).save_pretrained(
        root / "bert768-lora"
    )
    save_file(
        {f"bert.{k}": v.contiguous() for k, v in BertModel(wide).state_dict().items()},
        str(root / "bert768.safetensors"),
    )
    gpt2 = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    gpt2.save_pretrained(root / "gpt2")
    get_peft_model(gpt2, LoraConfig(r=2, target_modules=["c_attn"])).save_pretrained(
        root / "gpt2-lora"
    )
    (root / "pickled").mkdir()
    shutil.copyfile(base_dir / "config.json", root / "pickled" / "config.json")
    torch.save({"w": torch.zeros(1)}, root / "pickled" / "pytorch_model.bin")
    (root / "escape").symlink_to(base_dir, target_is_directory=True)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    encoders: EncoderCache,
    banking_rows: list[dict[str, str]],
) -> Iterator[RefreshServer]:
    """A server whose checkpoint root holds the test checkpoints, with a pool embedded as v1."""
    root = tmp_path_factory.mktemp("checkpoints")
    build_checkpoints(root)
    store = Store(str(tmp_path_factory.mktemp("refresh") / "store"))
    settings = EncoderSettings(
        server=ServerSettings(port=0, max_workers=4),
        store=store.uri,
        onnx_cache=encoders.onnx_cache_dir,
        checkpoint_root=root,
    )
    servicer = EncoderServicer(store, settings, encoders)
    running: RunningServer = start_server(
        settings.server,
        lambda s: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, s),
        [encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name],
    )
    channel = grpc.insecure_channel(running.address, options=grpc_channel_options())
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    data = "".join(json.dumps(row) + "\n" for row in banking_rows[:ROWS]).encode()
    header = encoder_pb2.PoolHeader(pool=POOL)
    stub.IngestPool(iter([encoder_pb2.IngestPoolChunk(header=header, data=data)]), timeout=60)
    (*_, last) = stub.EmbedPool(encoder_pb2.EmbedPoolRequest(pool=POOL), timeout=300)
    assert last.version.version == "v1"
    yield RefreshServer(store, stub, root)
    channel.close()
    running.stop(0)


def refresh(server: RefreshServer, checkpoint: str, **request: object) -> list:
    fields: dict[str, object] = {"pool": POOL, "checkpoint": checkpoint, **LABELS, **request}
    stream = server.stub.RefreshFromCheckpoint(encoder_pb2.RefreshRequest(**fields), timeout=300)
    return list(stream)


def mean_cosine(server: RefreshServer, version: str) -> float:
    _, base = server.store.read_embeddings(POOL, "v1")
    _, vectors = server.store.read_embeddings(POOL, version)
    return float(np.mean(np.sum(base * vectors, axis=1)))


@pytest.fixture(scope="module")
def hf_version(server: RefreshServer) -> encoder_pb2.EmbedProgress:
    return refresh(server, "hf")[-1]


def test_hf_directory_refresh_records_lineage(
    server: RefreshServer, hf_version: encoder_pb2.EmbedProgress
) -> None:
    version = hf_version.version
    assert (version.status, version.row_count, version.dim) == ("complete", ROWS, 384)
    assert version.version != "v1" and hf_version.rows_done == ROWS
    assert (version.source, version.model_id) == ("checkpoint", "hf")
    assert (version.label_count, version.label_set_hash) == (12, "ab" * 32)
    assert version.checkpoint_hash == sha256(server.root / "hf" / "model.safetensors")
    stored = server.store.get_version(POOL, version.version)
    assert (stored.source, stored.label_count, stored.label_set_hash) == (
        "checkpoint",
        12,
        "ab" * 32,
    )
    cosine = mean_cosine(server, version.version)
    assert 0.9 < cosine < 0.9999, cosine


@pytest.mark.parametrize("checkpoint", ["successor.safetensors", "successor"])
def test_prefixed_state_dict_matches_the_hf_directory(
    server: RefreshServer, hf_version: encoder_pb2.EmbedProgress, checkpoint: str
) -> None:
    version = refresh(server, checkpoint)[-1].version
    assert (version.status, version.source, version.dim) == ("complete", "checkpoint", 384)
    weights = server.root / checkpoint
    weights = weights / "model.safetensors" if weights.is_dir() else weights
    assert version.checkpoint_hash == sha256(weights)
    _, expected = server.store.read_embeddings(POOL, hf_version.version.version)
    _, vectors = server.store.read_embeddings(POOL, version.version)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


def test_lora_adapter_is_merged(server: RefreshServer) -> None:
    *progress, last = refresh(server, "lora", batch_size=16)
    assert progress and progress[0].rows_done == 0 and progress[-1].rows_done == ROWS
    adapter = server.root / "lora"
    expected_hash = hashlib.sha256(
        (adapter / "adapter_model.safetensors").read_bytes()
        + (adapter / "adapter_config.json").read_bytes()
    ).hexdigest()
    assert (last.version.status, last.version.checkpoint_hash) == ("complete", expected_hash)
    assert mean_cosine(server, last.version.version) < 0.9999


@pytest.mark.parametrize(
    ("checkpoint", "code", "message"),
    [
        ("missing/dir", grpc.StatusCode.NOT_FOUND, "'missing/dir' not found"),
        ("../outside", grpc.StatusCode.INVALID_ARGUMENT, "outside the checkpoint root"),
        ("/etc", grpc.StatusCode.INVALID_ARGUMENT, "relative path"),
        ("escape", grpc.StatusCode.INVALID_ARGUMENT, "outside the checkpoint root"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "checkpoint is required"),
        ("bert768", grpc.StatusCode.FAILED_PRECONDITION, "hidden_size 768; expected 384"),
        ("bert768.safetensors", grpc.StatusCode.FAILED_PRECONDITION, "shape mismatches"),
        ("gpt2", grpc.StatusCode.FAILED_PRECONDITION, "'gpt2' model; expected a 'bert'"),
        ("pickled", grpc.StatusCode.FAILED_PRECONDITION, "pytorch_model.bin (pickle)"),
        ("bert768-lora", grpc.StatusCode.FAILED_PRECONDITION, "size mismatch"),
        ("gpt2-lora", grpc.StatusCode.FAILED_PRECONDITION, "c_attn"),
        ("a" * 300, grpc.StatusCode.INVALID_ARGUMENT, "File name too long"),  # was INTERNAL
        ("a" * 513, grpc.StatusCode.INVALID_ARGUMENT, "at most 512 are accepted"),
    ],
)
def test_bad_checkpoints_leave_the_store_unchanged(
    server: RefreshServer, checkpoint: str, code: grpc.StatusCode, message: str
) -> None:
    before = server.store.list_versions(POOL, include_incomplete=True)
    with pytest.raises(grpc.RpcError) as info:
        refresh(server, checkpoint)
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()
    assert server.store.list_versions(POOL, include_incomplete=True) == before


def test_unknown_pool_is_not_found(server: RefreshServer) -> None:
    with pytest.raises(grpc.RpcError) as info:
        refresh(server, "hf", pool="no-such-pool")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
