"""Run directories: the written files load back to the same run, acquisition sequences and
budgets, the pool fingerprint, and clear errors for anything that is not a valid run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from proxal.orchestrator_service.analysis.runs import (
    MANIFEST,
    ROUNDS,
    RoundRow,
    Run,
    SessionInfo,
    SuccessorRow,
    append_successors,
    check_same_pool,
    load_run,
    pool_fingerprint,
    write_run,
)
from proxal.orchestrator_service.engine.simulation import PoolData, SimulationResult
from proxal.runtime.errors import InvalidArgumentError, NotFoundError
from proxal.store import Store


def _run(name: str = "r", fingerprint: str = "fp") -> Run:
    rounds = [
        RoundRow("margin", 0, 0, 3, 0.5, 0.4, (7, 8), fit_s=0.1, round_s=0.2),
        RoundRow("margin", 0, 1, 5, 0.6, math.nan, (9,), score_s=0.3),
        RoundRow("margin", 0, 2, 6, 0.7, 0.6, ()),
    ]
    return Run(
        name=name,
        pool="p",
        pool_fingerprint=fingerprint,
        store="/tmp/nowhere",
        embedding_version="v1",
        classes=["a", "b"],
        sessions=[SessionInfo("margin", 0, "s-margin-0", (1, 2, 3))],
        rounds=rounds,
        encoder={"model": "minilm-l6"},
        embed_s=1.5,
        config={"plan": {"initial": 3}},
    )


def test_a_run_round_trips_and_gives_its_sequence(tmp_path: Path) -> None:
    run = _run()
    write_run(run, tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    assert loaded.rounds[0] == run.rounds[0]
    assert math.isnan(loaded.rounds[1].macro_f1)  # NaN is written as null and read back
    assert (loaded.sessions, loaded.classes, loaded.embed_s) == (run.sessions, ["a", "b"], 1.5)
    assert loaded.directory == tmp_path / "run"
    assert [b.tolist() for b in loaded.batches("margin", 0)] == [[7, 8], [9]]
    assert loaded.labeled_ids("margin", 0).tolist() == [1, 2, 3, 7, 8, 9]
    assert loaded.labeled_ids("margin", 0, 4).tolist() == [1, 2, 3, 7]
    assert loaded.budgets("margin", 0) == [3, 5, 6]
    with pytest.raises(InvalidArgumentError, match=r"outside 1\.\.6"):
        loaded.labeled_ids("margin", 0, 7)
    with pytest.raises(NotFoundError, match="margin/s0"):
        loaded.session("entropy", 0)
    append_successors(tmp_path / "run", [SuccessorRow("margin", 0, 5, "m", "full", 0.8, 0.7, 9.0)])
    append_successors(
        tmp_path / "run",
        [SuccessorRow("margin", 0, 6, "m", "full", 0.9, 0.8, 9.0, plasm={"kept": 4})],
    )
    assert [s.plasm for s in load_run(tmp_path / "run").successors] == [None, {"kept": 4}]


def test_bad_run_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not a run directory"):
        load_run(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgumentError, match="is a file"):
        write_run(_run(), tmp_path / "file")
    out = write_run(_run(), tmp_path / "run")
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "format": "other/9"}))
    with pytest.raises(InvalidArgumentError, match="format 'other/9'"):
        load_run(out)
    del manifest["pool"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InvalidArgumentError, match="missing pool"):
        load_run(out)
    write_run(_run(), out)
    (out / ROUNDS).write_text('{"strategy": "margin"\n')
    with pytest.raises(InvalidArgumentError, match=r"rounds.jsonl:1: not JSON"):
        load_run(out)
    (out / ROUNDS).write_text('{"strategy": "margin", "seed": 0}\n')
    with pytest.raises(InvalidArgumentError, match="not a RoundRow row"):
        load_run(out)
    (out / ROUNDS).write_text("")
    with pytest.raises(InvalidArgumentError, match="has no rounds"):
        load_run(out)


def test_runs_over_different_pools_do_not_compare(store: Store) -> None:
    check_same_pool(_run("a"), _run("b"))
    with pytest.raises(InvalidArgumentError, match="different pools"):
        check_same_pool(_run("a"), _run("b", fingerprint="other"))
    store.add_pool_rows("p", "train", ["one", "two"], ["a", "b"])
    store.add_pool_rows("q", "train", ["one", "two"], ["a", "b"])
    store.add_pool_rows("r", "train", ["one", "two!"], ["a", "b"])
    assert pool_fingerprint(store, "p") == pool_fingerprint(store, "q")
    assert pool_fingerprint(store, "p") != pool_fingerprint(store, "r")


def test_a_simulation_result_becomes_a_run(store: Store, tmp_path: Path) -> None:
    store.add_pool_rows("p", "train", ["one", "two", "three"], ["a", "b", "a"])
    data = PoolData(
        "p", "v1", ["a", "b"], np.arange(3), np.zeros(3, np.int32), np.arange(0), np.arange(0)
    )
    result = SimulationResult(points=_run().rounds, sessions=_run().sessions)
    run = result.to_run(store, data, "sim", dataset="toy", embed_s=2.0)
    assert (run.pool_fingerprint, run.dataset) == (pool_fingerprint(store, "p"), "toy")
    assert Path(run.store).is_absolute() and run.store == str(Path(store.uri).resolve())
    assert load_run(write_run(run, tmp_path / "sim")).labeled_ids("margin", 0).size == 6
