"""ASVP in the loop: the schedule, the LP-FT/FT rule, and a simulated loop that refreshes its
features through a real encoder service (subprocess, real MiniLM) and a real proxy service,
recording every decision in the rounds table; plus the bad inputs of the issue."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from proxal.orchestrator_service.engine.asvp import (
    AsvpConfig,
    FeatureAligner,
    label_set_hash,
    successor_rule,
)
from proxal.orchestrator_service.engine.simulation import (
    AsvpRuntime,
    LoopConfig,
    PoolData,
    run_simulation,
)
from proxal.orchestrator_service.rpc.clients import EncoderClient, ProxyClient
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.orchestrator_service.successor.training import SuccessorConfig
from proxal.runtime.errors import InvalidArgumentError, NotFoundError
from proxal.store import Store

from tests.conftest import BANKING77, read_jsonl

POOL = "asvp"
TINY_FINETUNE = SuccessorConfig(
    method="lora", epochs=2, max_length=32, validation_fraction=0.25, lora_lr=3e-3
)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (AsvpConfig(threshold=-0.01), "threshold"),
        (AsvpConfig(threshold=math.nan), "threshold"),
        (AsvpConfig(threshold=math.inf), "threshold"),
        (AsvpConfig(every_rounds=-1), "every_rounds"),
        (AsvpConfig(growth_factor=1.0), "growth_factor"),
        (AsvpConfig(every_rounds=0, growth_factor=0.0), "trigger"),
        (
            AsvpConfig(finetune=SuccessorConfig(method="lora", validation_fraction=0.0)),
            "validation_fraction",
        ),
    ],
)
def test_bad_configs_say_what_to_fix(config: AsvpConfig, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        config.validate()


def test_successor_rule_follows_b1_against_b2() -> None:
    assert successor_rule(5, 2)[0] == "lp_ft"
    assert successor_rule(2, 5)[0] == "full"
    assert successor_rule(3, 3)[0] == "full"  # a tie does not justify the slower LP-FT
    assert "5" in successor_rule(5, 2)[1] and "2" in successor_rule(5, 2)[1]


def test_label_set_hash_ignores_order() -> None:
    assert label_set_hash([3, 1], [0, 1]) == label_set_hash([1, 3], [1, 0])
    assert label_set_hash([3, 1], [0, 1]) != label_set_hash([3, 1], [1, 0])


def _aligner(config: AsvpConfig, root: Path) -> FeatureAligner:
    def never(*args: object) -> object:
        raise AssertionError("not called in this test")

    return FeatureAligner(
        config,
        {},
        2,
        root,
        never,
        never,
        never,
        name="s",
        initial_labels=100,  # type: ignore[arg-type]
    )


def test_schedule_by_count_and_by_growth(tmp_path: Path) -> None:
    by_count = _aligner(AsvpConfig(every_rounds=3), tmp_path)
    assert [r for r in range(10) if by_count.due(r, 100 + 50 * r)] == [3, 6, 9]
    by_growth = _aligner(AsvpConfig(every_rounds=0, growth_factor=2.0), tmp_path)
    assert not by_growth.due(1, 199) and by_growth.due(1, 200)
    by_growth.last_labels = 200  # what a check at 200 labels leaves behind
    assert not by_growth.due(2, 399) and by_growth.due(3, 400)


def test_a_check_with_too_few_labels_to_hold_out_is_skipped_and_recorded(tmp_path: Path) -> None:
    aligner = _aligner(AsvpConfig(), tmp_path)
    aligner.texts_of = {7: "a", 8: "b"}
    decision = aligner.check(1, "v1", np.array([7, 8]), np.array([0, 1], dtype=np.int32))
    assert decision.action == "skip" and decision.version_after == "v1"
    assert "no training example" in decision.note
    assert decision.as_dict()["gap"] is None  # NaN never reaches the JSON
    assert aligner.decisions == [decision]


def test_missing_checkpoint_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="checkpoint root"):
        _aligner(AsvpConfig(), tmp_path / "nope")


# ---------------------------------------------------------------- end to end


@dataclass
class Services:
    store: Store
    encoder: EncoderClient
    proxy: ProxyClient
    root: Path
    version: str
    texts_of: dict[int, str]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Three Banking77 intents (real text): 96 train + 30 test rows, embedded by MiniLM."""
    tmp = tmp_path_factory.mktemp("asvp")
    rows = read_jsonl(BANKING77 / "train.jsonl")
    keep = [c for c, _ in Counter(r["label"] for r in rows).most_common(3)]
    chosen = [r for r in rows if r["label"] in keep]
    rng = np.random.default_rng(0)
    picked = [chosen[i] for i in rng.permutation(len(chosen))[:126]]
    for split, part in (("train", picked[:96]), ("test", picked[96:])):
        (tmp / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in part), encoding="utf-8"
        )
    root = tmp / "checkpoints"
    root.mkdir()
    store_uri = str(tmp / "store")
    with (
        ServiceProcess("encoder_service", store_uri, ["--checkpoint-root", str(root)]) as enc,
        ServiceProcess("proxy_service", store_uri) as prx,
    ):
        encoder, proxy = EncoderClient(enc.address), ProxyClient(prx.address)
        for split in ("train", "test"):
            encoder.ingest_file(POOL, split, tmp / f"{split}.jsonl")
        version = encoder.embed(POOL, max_length=32).version
        store = Store(store_uri)
        table = store.pool_rows(POOL, columns=["id", "text"])
        texts_of = dict(
            zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True)
        )
        yield Services(store, encoder, proxy, root, version, texts_of)
        encoder.close()
        proxy.close()


LOOP = LoopConfig(strategies=("margin",), seeds=(0,), initial_size=24, batch_size=12, rounds=2)


def test_loop_refreshes_features_and_records_every_decision(services: Services) -> None:
    data = PoolData.from_store(services.store, POOL, services.version)
    # threshold 0 with a fine-tune that clearly separates 3 intents: the gap is positive.
    config = replace(LOOP, asvp=AsvpConfig(every_rounds=1, threshold=0.0, finetune=TINY_FINETUNE))
    runtime = AsvpRuntime(services.encoder, services.root, services.texts_of)
    result = run_simulation(services.store, services.proxy, data, config, "refresh", asvp=runtime)

    decisions = result.alignment[("margin", 0)]
    assert [d.round for d in decisions] == [1]  # never on the last round: nothing follows it
    rounds = services.store.read_rounds("refresh-margin-s0")
    assert "asvp" not in rounds[0].proxy_spec  # round 0 is never checked
    assert "asvp" not in rounds[2].proxy_spec  # nor the last
    for record, decision in zip(rounds[1:2], decisions, strict=True):
        recorded = record.proxy_spec["asvp"]
        assert recorded["gap"] == pytest.approx(decision.logme_finetuned - decision.logme_current)
        assert recorded["action"] == ("refresh" if decision.gap > 0 else "keep")
        assert recorded["successor_method"] in {"lp_ft", "full"}
        assert record.timings["asvp_finetune_s"] > 0
        assert record.embedding_version == decision.version_after
    refreshed = [d for d in decisions if d.action == "refresh"]
    assert refreshed, f"no refresh with threshold 0: gaps {[d.gap for d in decisions]}"
    new = services.store.get_version(POOL, refreshed[0].version_after)
    assert new.complete and new.source == "checkpoint" and new.label_count == refreshed[0].labels
    assert new.version != services.version
    assert rounds[2].embedding_version == new.version  # the proxy stays on the new features
    # the run directory's rounds say which version each round selected on
    assert [p.embedding_version for p in result.points] == [r.embedding_version for r in rounds]
    assert result.points[0].embedding_version == services.version
    assert not any(services.root.rglob("*.safetensors"))  # checkpoints cleaned up
    method, reason = result.successor_method("margin", 0)
    assert method == decisions[-1].successor_method and reason


def test_a_huge_threshold_keeps_the_features(services: Services) -> None:
    data = PoolData.from_store(services.store, POOL, services.version)
    config = replace(
        LOOP, rounds=2, asvp=AsvpConfig(every_rounds=1, threshold=1e6, finetune=TINY_FINETUNE)
    )
    runtime = AsvpRuntime(services.encoder, services.root, services.texts_of)
    result = run_simulation(services.store, services.proxy, data, config, "keep", asvp=runtime)
    (decision,) = result.alignment[("margin", 0)]
    assert decision.action == "keep" and decision.version_after == services.version
    assert all(
        r.embedding_version == services.version
        for r in services.store.read_rounds("keep-margin-s0")
    )


def test_a_missing_checkpoint_fails_cleanly_and_keeps_labels_and_rounds(
    services: Services, tmp_path: Path
) -> None:
    """The aligner writes its checkpoint where the encoder does not look: NOT_FOUND; the
    labels and rounds recorded before the failure are all still there."""
    data = PoolData.from_store(services.store, POOL, services.version)
    config = replace(
        LOOP, rounds=3, asvp=AsvpConfig(every_rounds=2, threshold=0.0, finetune=TINY_FINETUNE)
    )
    elsewhere = tmp_path / "not-the-encoders-root"
    elsewhere.mkdir()
    runtime = AsvpRuntime(services.encoder, elsewhere, services.texts_of)
    with pytest.raises(grpc.RpcError) as caught:
        run_simulation(services.store, services.proxy, data, config, "lost", asvp=runtime)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    ids, _ = services.store.read_labels("lost-margin-s0")
    assert len(ids) == 24 + 12 + 12  # the initial set and both acknowledged batches
    assert [r.round for r in services.store.read_rounds("lost-margin-s0")] == [0, 1]


def test_a_budget_larger_than_the_pool_is_refused_before_any_work(services: Services) -> None:
    data = PoolData.from_store(services.store, POOL, services.version)
    config = replace(LOOP, rounds=100, asvp=AsvpConfig(finetune=TINY_FINETUNE))
    runtime = AsvpRuntime(services.encoder, services.root, services.texts_of)
    with pytest.raises(InvalidArgumentError, match="exceeds the pool"):
        run_simulation(services.store, services.proxy, data, config, "big", asvp=runtime)
    with pytest.raises(NotFoundError):
        services.store.get_session("big-margin-s0")


def test_finetuned_features_are_computed_as_the_encoder_service_does(tmp_path: Path) -> None:
    """LogME compares stored vectors with `Successor.encode`; before any training the two must
    be the same vectors, or the gap would measure a pooling difference, not fine-tuning."""
    from proxal.encoder_service.encoders import TORCH, build_encoder
    from proxal.orchestrator_service.successor.training import MeanPoolClassifier, Successor
    from proxal.runtime.models import MINILM_L6, minilm_l6_path
    from transformers import AutoTokenizer

    texts = [r["text"] for r in read_jsonl(BANKING77 / "test.jsonl", limit=20)]
    path = minilm_l6_path()
    untrained = Successor(
        MeanPoolClassifier.from_pretrained(path, 3),
        AutoTokenizer.from_pretrained(str(path)),
        num_classes=3,
        max_length=32,
        base_model=MINILM_L6,
    )
    stored, _ = build_encoder(MINILM_L6, TORCH, 32, tmp_path).encode(texts)
    ours = untrained.encode(texts)
    assert ours.shape == stored.shape == (20, 384)
    np.testing.assert_allclose(np.sum(ours * stored, axis=1), 1.0, atol=1e-5)
