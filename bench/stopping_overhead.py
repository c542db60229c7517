"""What the stopping signals add to the demo's proxy rounds, measured A/B in one process.

    .venv/bin/proxal demo --out proxal-demo --successor-strategies ""   # embeds once
    .venv/bin/python bench/stopping_overhead.py proxal-demo/store [--order b,s,b,s]

Copies the store (the sessions it writes stay out of the demo's), then runs the demo's loops
(every strategy x seed, random to twice the budget: 165 rounds) once per entry of `--order`:
`s` with the stopping signals as the simulator records them, `b` with the evaluation the
simulator had before them (one Predict on the test split). Each run gets a fresh proxy
process, so no run reuses another's fitted models. Prints the loop seconds of each run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from proxal.orchestrator_service.analysis.evaluation import test_scores
from proxal.orchestrator_service.demo.run import DemoConfig, simulate_config
from proxal.orchestrator_service.demo.simulate import loop_parts
from proxal.orchestrator_service.engine import simulation
from proxal.orchestrator_service.engine.selectors import TrainingSet
from proxal.orchestrator_service.rpc.clients import ProxyClient
from proxal.orchestrator_service.rpc.processes import ServiceProcess
from proxal.store import Store

WITH_SIGNALS = simulation.Oracle.evaluate


def without_signals(
    self: simulation.Oracle, version: str, training: TrainingSet, seed: int
) -> dict[str, float]:
    """The simulator's evaluation before the stopping signals."""
    d = self.data
    predicted = self.proxy.predict(
        d.pool, version, training, d.test_ids, seed=seed, classifier=self.spec
    )
    return test_scores(d.test_gold, predicted, len(d.classes))


def loops_seconds(store: Store, work: Path, run: str) -> float:
    """The demo's loops on a fresh proxy → their wall seconds."""
    version = store.latest_version("banking77").version
    data = simulation.PoolData.from_store(store, "banking77", version)
    parts = loop_parts(simulate_config(DemoConfig(out_dir=work)), len(data.train_ids))
    with ServiceProcess("proxy_service", store.uri, log_path=work / f"{run}.log") as process:
        proxy = ProxyClient(process.address)
        wall = sum(
            simulation.run_simulation(store, proxy, data, part, run).wall_s for part in parts
        )
        proxy.close()
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="the demo's store (after one demo run)")
    parser.add_argument("--order", default="b,s,b,s", help="runs: b without, s with signals")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(args.store, work / "store")
        store = Store(str(work / "store"))
        evaluate: dict[str, Any] = {"b": without_signals, "s": WITH_SIGNALS}
        for n, mode in enumerate(args.order.split(",")):
            simulation.Oracle.evaluate = evaluate[mode]
            seconds = loops_seconds(store, work, f"ab{n}-{mode}")
            name = "with signals" if mode == "s" else "without"
            print(f"{name:>12}: {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
