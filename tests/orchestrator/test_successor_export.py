"""Bottleneck-adapter successors and ONNX export, on real MiniLM-L6 and Banking77.

Tiny on purpose (4 classes x 10 texts, max_length 24, 1-2 epochs) so the file stays well
under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from proxal.orchestrator_service.successor.training import (
    MeanPoolClassifier,
    Successor,
    SuccessorConfig,
    add_bottleneck_adapters,
    fine_tune_successor,
    load_successor,
)
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.models import minilm_l6_path
from safetensors.torch import load_file

from tests.conftest import banking_slice

CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed")
TINY: dict[str, Any] = {"batch_size": 8, "max_length": 24, "seed": 0, "validation_fraction": 0.0}
PROBE = [
    "my card still has not arrived",
    "what exchange rate do you use?",
    "someone stole my phone, what do I do",
    "top up failed again",
    "hi",
]
LAYERS, HIDDEN, WIDTH = 6, 384, 384 // 16


@pytest.fixture(scope="module")
def data() -> tuple[list[str], list[int]]:
    return banking_slice(CLASSES, 10)


@pytest.fixture(scope="module")
def bottleneck(data: tuple[list[str], list[int]]) -> Successor:
    config = SuccessorConfig(method="bottleneck", epochs=2, **TINY)
    return fine_tune_successor(*data, len(CLASSES), config, progress=False)


@pytest.fixture(scope="module")
def full(data: tuple[list[str], list[int]]) -> Successor:
    config = SuccessorConfig(method="full", epochs=1, **TINY)
    return fine_tune_successor(*data, len(CLASSES), config, progress=False)


def test_fresh_bottleneck_adapters_are_the_identity() -> None:
    # Zero-initialised up-projections: adding adapters changes no output, bit for bit.
    model = MeanPoolClassifier.from_pretrained(minilm_l6_path(), len(CLASSES)).eval()
    ids = torch.tensor([[101, 2026, 4003, 2038, 102], [101, 7592, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        before = model.pooled(ids, mask)
        add_bottleneck_adapters(model, 16)
        after = model.pooled(ids, mask)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    adapter: Any = model.encoder.get_submodule("encoder.layer.0.output.adapter")
    assert adapter.down.out_features == WIDTH and adapter.up.out_features == HIDDEN
    with pytest.raises(InvalidArgumentError, match="already has bottleneck adapters"):
        add_bottleneck_adapters(model, 16)


def test_bottleneck_trains_only_adapters_and_head(
    bottleneck: Successor, pretrained: dict[str, torch.Tensor]
) -> None:
    trainable = {n: p.numel() for n, p in bottleneck.model.named_parameters() if p.requires_grad}
    assert all(".output.adapter." in n or n.startswith("head.") for n in trainable)
    per_adapter = HIDDEN * WIDTH + WIDTH + WIDTH * HIDDEN + HIDDEN
    assert sum(trainable.values()) == LAYERS * per_adapter + HIDDEN * len(CLASSES) + len(CLASSES)
    total = sum(p.numel() for p in bottleneck.model.parameters())
    assert sum(trainable.values()) / total < 0.01  # 115k of 22.8M
    # Every pretrained encoder tensor is exactly as loaded; the adapters did learn.
    tuned = bottleneck.model.encoder.state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in pretrained.items() if k in tuned)
    assert {k for k in tuned if k not in pretrained} == {
        f"encoder.layer.{i}.output.adapter.{proj}.{kind}"
        for i in range(LAYERS)
        for proj in ("down", "up")
        for kind in ("weight", "bias")
    }
    assert all(bool(tuned[f"encoder.layer.{i}.output.adapter.up.weight"].any()) for i in range(6))
    assert bottleneck.history is not None and bottleneck.history.method == "bottleneck"
    assert bottleneck.epoch_losses[-1] < bottleneck.epoch_losses[0]


def test_bottleneck_round_trip_predicts_identically(bottleneck: Successor, tmp_path: Path) -> None:
    out = bottleneck.save(tmp_path / "bn", label_names=list(CLASSES))
    config = json.loads((out / "config.json").read_text())
    assert config["adapter"] == {"kind": "bottleneck", "reduction": 16}
    assert config["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}
    loaded = load_successor(out, device="cpu")
    assert loaded.model.bottleneck_reduction == 16
    assert loaded.label_names == CLASSES
    np.testing.assert_allclose(
        loaded.predict_proba(PROBE), bottleneck.predict_proba(PROBE), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(loaded.encode(PROBE), bottleneck.encode(PROBE), atol=1e-6)
    # Without its adapters the same weights would predict differently: they are in use.
    plain = MeanPoolClassifier.from_encoder_config(config["encoder_config"], len(CLASSES))
    state = load_file(str(out / "model.safetensors"))
    plain.load_state_dict({k: v for k, v in state.items() if ".adapter." not in k})
    reference = Successor(plain, bottleneck.tokenizer, len(CLASSES), 24, "x")
    assert not np.allclose(reference.predict_proba(PROBE), bottleneck.predict_proba(PROBE))


def test_full_successor_records_no_adapter(full: Successor, tmp_path: Path) -> None:
    out = full.save(tmp_path / "full")
    config = json.loads((out / "config.json").read_text())
    assert config["adapter"] is None
    assert config["label_names"] == ["0", "1", "2", "3"]
    assert load_successor(out, device="cpu").model.bottleneck_reduction is None


def test_unknown_adapter_kind_is_refused(full: Successor, tmp_path: Path) -> None:
    out = full.save(tmp_path / "odd")
    config = json.loads((out / "config.json").read_text())
    config["adapter"] = {"kind": "prefix", "reduction": 16}
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidArgumentError, match="adapter this proxal does not know"):
        load_successor(out, device="cpu")


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ({"bottleneck_reduction": 0}, "bottleneck_reduction must be an integer >= 1"),
        ({"bottleneck_reduction": 1.5}, "bottleneck_reduction must be an integer >= 1"),
        ({"bottleneck_reduction": True}, "bottleneck_reduction must be an integer >= 1"),
        ({"adapter_lr": 0.0}, "adapter_lr must be > 0"),
    ],
)
def test_bad_bottleneck_config(field: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        SuccessorConfig(method="bottleneck", **field)  # type: ignore[arg-type]


def test_bottleneck_wider_reduction_than_hidden_is_refused(
    data: tuple[list[str], list[int]],
) -> None:
    config = SuccessorConfig(method="bottleneck", bottleneck_reduction=385, **TINY)
    with pytest.raises(InvalidArgumentError, match="no adapter width for hidden size 384"):
        fine_tune_successor(*data, len(CLASSES), config, progress=False)


def _onnx_logits(path: Path, successor: Successor, texts: list[str]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = successor.tokenizer(
        texts, padding=True, truncation=True, max_length=successor.max_length, return_tensors="np"
    )
    feeds = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
    return np.asarray(session.run(["logits"], feeds)[0])


def _torch_logits(successor: Successor, texts: list[str]) -> np.ndarray:
    batch = successor.tokenizer(
        texts, padding=True, truncation=True, max_length=successor.max_length, return_tensors="pt"
    )
    with torch.no_grad():
        return successor.model.eval()(batch["input_ids"], batch["attention_mask"]).numpy()


@pytest.mark.parametrize("method", ["full", "bottleneck"])
def test_onnx_logits_match_torch(
    method: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    successor: Successor = request.getfixturevalue(method)
    path = successor.export_onnx(tmp_path / method, label_names=list(CLASSES))
    assert path == tmp_path / method / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert all(i.type == "tensor(int64)" and len(i.shape) == 2 for i in inputs.values())
    assert all(isinstance(dim, str) for i in inputs.values() for dim in i.shape)  # dynamic
    [output] = session.get_outputs()
    assert output.name == "logits" and output.shape[1] == len(CLASSES)
    # A padded batch of 5, then batch sizes and lengths unlike the traced example.
    for texts in (PROBE, PROBE[:1], [PROBE[4]], [" ".join(PROBE)] * 3):
        onnx_logits = _onnx_logits(path, successor, texts)
        assert onnx_logits.shape == (len(texts), len(CLASSES))
        np.testing.assert_allclose(onnx_logits, _torch_logits(successor, texts), atol=1e-4)
    proba = torch.softmax(torch.from_numpy(_onnx_logits(path, successor, PROBE)), -1).numpy()
    np.testing.assert_allclose(proba, successor.predict_proba(PROBE), atol=1e-5)
    labels = json.loads((tmp_path / method / "labels.json").read_text())
    assert labels["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}
    assert labels["label2id"] == {name: i for i, name in enumerate(CLASSES)}
    assert not list((tmp_path / method).glob("*.tmp"))  # written via a temporary file


def test_save_with_onnx_writes_everything(bottleneck: Successor, tmp_path: Path) -> None:
    out = bottleneck.save(tmp_path / "all", label_names=list(CLASSES), onnx=True)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "labels.json", "model.onnx"} <= names
    assert "tokenizer.json" in names
    loaded = load_successor(out, device="cpu")
    np.testing.assert_allclose(
        _onnx_logits(out / "model.onnx", loaded, PROBE), _torch_logits(loaded, PROBE), atol=1e-4
    )


def test_export_into_a_file_is_refused(full: Successor, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_text("not a directory")
    with pytest.raises(InvalidArgumentError, match=r"is a file, not a directory"):
        full.export_onnx(target)
    with pytest.raises(InvalidArgumentError, match=r"is a file, not a directory"):
        full.save(target)
    assert target.read_text() == "not a directory"


def test_export_with_wrong_label_names_is_refused(full: Successor, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="must name all 4 classes"):
        full.export_onnx(tmp_path / "x", label_names=["a", "b"])
    with pytest.raises(InvalidArgumentError, match="distinct"):
        full.export_onnx(tmp_path / "x", label_names=["a", "a", "b", "c"])
    assert not (tmp_path / "x").exists()
