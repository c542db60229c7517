"""Run directories: what one active-learning run leaves behind for `proxal report`,
`proxal compare` and `proxal asm`.

    RUN_DIR/
      run.json          the manifest: pool, pool fingerprint, store, embedding version,
                        encoder, classes, config, one-off embedding seconds, and each
                        session's (strategy, seed, session name, seeded initial ids)
      rounds.jsonl      one line per (strategy, seed, round): labels so far, test accuracy and
                        macro-F1 of that round's model, the batch it selected, seconds spent
      successors.jsonl  (optional) one line per successor trained on a prefix of a session's
                        labels (plain or PLASM), with its test scores

A session's acquisition sequence is its initial ids followed by each round's batch; a
budget b's labeled set is the first b ids of that sequence.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from proxal.runtime.errors import InvalidArgumentError, NotFoundError
from proxal.store import Store

FORMAT = "proxal-run/1"
MANIFEST = "run.json"
ROUNDS = "rounds.jsonl"
SUCCESSORS = "successors.jsonl"


@dataclass(frozen=True)
class RoundRow:
    """One round of one (strategy, seed) session.

    `labels` is how many labels the round's model was fitted on; `accuracy`/`macro_f1` are
    its test scores; `selected_ids` is the batch it then selected (empty on the last round).
    Seconds: `embed_s` re-embedding the pool in this round (an ASVP refresh; the one-off
    embedding is `Run.embed_s`), `load_s` reading embeddings, `fit_s` fitting, `score_s`
    scoring and selecting, `finetune_s` fine-tuning (ASVP checks; the fine-tuned loop),
    `round_s` the whole round. `stopping` holds the stopping signals of the round's model
    (`engine.stopping`).
    """

    strategy: str
    seed: int
    round: int
    labels: int
    accuracy: float
    macro_f1: float
    selected_ids: tuple[int, ...] = ()
    embed_s: float = 0.0
    load_s: float = 0.0
    fit_s: float = 0.0
    score_s: float = 0.0
    finetune_s: float = 0.0
    round_s: float = 0.0
    embedding_version: str = ""  # the version the round selected on (ASVP may switch it)
    # The stopping signals at this round: name -> {"value" (None: not computable), "stop"}.
    stopping: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionInfo:
    """A (strategy, seed) session of a run and the seeded random ids it started from."""

    strategy: str
    seed: int
    session: str
    initial_ids: tuple[int, ...]


@dataclass(frozen=True)
class SuccessorRow:
    """A successor trained on the first `labels` acquired labels of (strategy, seed).

    `model` names the successor's architecture, `method` how it was trained; `plasm` holds
    the pseudo-labeling record when PLASM added pseudo-labels (None: gold labels only).
    """

    strategy: str
    seed: int
    labels: int
    model: str
    method: str
    accuracy: float
    macro_f1: float
    train_s: float
    plasm: dict[str, Any] | None = None


@dataclass
class Run:
    """A loaded (or about to be written) run directory; see the module docstring."""

    name: str
    pool: str
    pool_fingerprint: str
    store: str
    embedding_version: str
    classes: list[str]
    sessions: list[SessionInfo]
    rounds: list[RoundRow]
    encoder: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    embed_s: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    successors: list[SuccessorRow] = field(default_factory=list)
    directory: Path | None = None

    def identity(self) -> dict[str, Any]:
        """What the run is over: name, dataset, pool (and fingerprint), store, embedding
        version and encoder."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "pool": self.pool,
            "pool_fingerprint": self.pool_fingerprint,
            "store": self.store,
            "embedding_version": self.embedding_version,
            "encoder": dict(self.encoder),
        }

    def strategies(self) -> list[str]:
        """Strategies in the order their sessions were run."""
        return list(dict.fromkeys(s.strategy for s in self.sessions))

    def seeds(self, strategy: str) -> list[int]:
        return [s.seed for s in self.sessions if s.strategy == strategy]

    def session(self, strategy: str, seed: int) -> SessionInfo:
        for s in self.sessions:
            if s.strategy == strategy and s.seed == seed:
                return s
        raise NotFoundError(
            f"run {self.name!r} has no session for strategy {strategy!r} seed {seed}; it has "
            + ", ".join(f"{s.strategy}/s{s.seed}" for s in self.sessions)
        )

    def session_rounds(self, strategy: str, seed: int) -> list[RoundRow]:
        """That session's rounds, in round order."""
        return sorted(
            (r for r in self.rounds if r.strategy == strategy and r.seed == seed),
            key=lambda r: r.round,
        )

    def batches(self, strategy: str, seed: int) -> list[npt.NDArray[np.int64]]:
        """The acquisition sequence's selected batches (the initial set excluded), in order."""
        self.session(strategy, seed)
        return [
            np.array(r.selected_ids, dtype=np.int64)
            for r in self.session_rounds(strategy, seed)
            if r.selected_ids
        ]

    def labeled_ids(
        self, strategy: str, seed: int, budget: int | None = None
    ) -> npt.NDArray[np.int64]:
        """The first `budget` ids of the acquisition sequence (all of them by default)."""
        info = self.session(strategy, seed)
        ids = np.array(info.initial_ids, dtype=np.int64)
        batches = self.batches(strategy, seed)
        if batches:
            ids = np.concatenate([ids, *batches])
        if budget is None:
            return ids
        if not 0 < budget <= len(ids):
            raise InvalidArgumentError(
                f"budget {budget} is outside 1..{len(ids)}, the labels {strategy}/s{seed} "
                f"acquired in run {self.name!r}"
            )
        return ids[:budget]

    def budgets(self, strategy: str, seed: int) -> list[int]:
        """The label counts at which the session's rounds were evaluated."""
        return [r.labels for r in self.session_rounds(strategy, seed)]


def pool_fingerprint(store: Store, pool: str) -> str:
    """sha256 over the pool's (id, split, text) rows in id order: two runs compare only when
    their pools are the same texts under the same ids."""
    rows = store.pool_rows(pool, columns=["id", "split", "text"])
    order = np.argsort(rows.column("id").to_numpy())
    ids = rows.column("id").to_pylist()
    splits = rows.column("split").to_pylist()
    texts = rows.column("text").to_pylist()
    digest = hashlib.sha256()
    for i in order.tolist():
        digest.update(f"{ids[i]}\t{splits[i]}\t{texts[i]}\n".encode())
    return digest.hexdigest()


def check_same_pool(a: Run, b: Run) -> None:
    """Raise InvalidArgumentError unless runs `a` and `b` were acquired from the same pool."""
    if a.pool != b.pool or a.pool_fingerprint != b.pool_fingerprint:
        raise InvalidArgumentError(
            f"runs {a.name!r} (pool {a.pool!r}, fingerprint {a.pool_fingerprint[:12]}) and "
            f"{b.name!r} (pool {b.pool!r}, fingerprint {b.pool_fingerprint[:12]}) were "
            "acquired from different pools; compare runs over the same pool"
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _jsonable(obj: Any) -> Any:
    """NaN/inf → None, tuples → lists, recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return _finite(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    return obj


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _jsonl(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(_jsonable(asdict(r))) + "\n" for r in rows)


def write_run(run: Run, directory: str | Path) -> Path:
    """Write `run` as a run directory (created if needed; files replaced atomically)."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"run directory {out} is a file; name a directory")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        **run.identity(),
        "classes": run.classes,
        "embed_s": run.embed_s,
        "config": run.config,
        "sessions": [asdict(s) for s in run.sessions],
    }
    _write_text(out / ROUNDS, _jsonl(run.rounds))
    if run.successors:
        _write_text(out / SUCCESSORS, _jsonl(run.successors))
    _write_text(out / MANIFEST, json.dumps(_jsonable(manifest), indent=2) + "\n")  # last
    run.directory = out
    return out


def append_successors(directory: str | Path, rows: Sequence[SuccessorRow]) -> None:
    """Add successor rows to an existing run directory."""
    path = Path(directory) / SUCCESSORS
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    _write_text(path, old + _jsonl(rows))


def _from_dict(cls: type[Any], row: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    try:
        values = {k: v for k, v in row.items() if k in names}
        for key in ("selected_ids", "initial_ids"):
            if key in values:
                values[key] = tuple(int(i) for i in values[key])
        for key in ("accuracy", "macro_f1"):
            if key in values and values[key] is None:
                values[key] = math.nan
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{where}: not a {cls.__name__} row ({exc})") from exc


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"{path}:{n}: not JSON ({exc.msg})") from exc
    return rows


def load_run(directory: str | Path) -> Run:
    """Read a run directory; NotFoundError if it is not one, InvalidArgumentError if it is
    malformed or has no rounds."""
    root = Path(directory)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise NotFoundError(
            f"{root} is not a run directory (no {MANIFEST}); `proxal demo --out DIR` and the "
            "benchmarks write run directories"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"{manifest_path}: not JSON ({exc.msg})") from exc
    if manifest.get("format") != FORMAT:
        raise InvalidArgumentError(
            f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}"
        )
    missing = [
        k
        for k in ("name", "pool", "pool_fingerprint", "store", "embedding_version", "classes")
        if k not in manifest
    ]
    if missing:
        raise InvalidArgumentError(f"{manifest_path}: missing {', '.join(missing)}")
    rounds_path = root / ROUNDS
    rounds = [
        _from_dict(RoundRow, r, f"{rounds_path}:{n}")
        for n, r in enumerate(_read_jsonl(rounds_path) if rounds_path.is_file() else [], 1)
    ]
    if not rounds:
        raise InvalidArgumentError(
            f"run {manifest['name']!r} in {root} has no rounds; nothing to report"
        )
    successors_path = root / SUCCESSORS
    successors = [
        _from_dict(SuccessorRow, r, f"{successors_path}:{n}")
        for n, r in enumerate(_read_jsonl(successors_path) if successors_path.is_file() else [], 1)
    ]
    sessions = [
        _from_dict(SessionInfo, s, f"{manifest_path} sessions[{n}]")
        for n, s in enumerate(manifest.get("sessions", []))
    ]
    return Run(
        name=manifest["name"],
        pool=manifest["pool"],
        pool_fingerprint=manifest["pool_fingerprint"],
        store=manifest["store"],
        embedding_version=manifest["embedding_version"],
        classes=list(manifest["classes"]),
        sessions=sessions,
        rounds=rounds,
        encoder=dict(manifest.get("encoder") or {}),
        dataset=manifest.get("dataset", ""),
        embed_s=float(manifest.get("embed_s") or 0.0),
        config=dict(manifest.get("config") or {}),
        successors=successors,
        directory=root,
    )
