"""`proxal demo`: `proxal simulate` preset on the bundled Banking77 subset, end to end.

The same path as simulate (orchestrator/demo/simulate.py): the encoder and proxy services as
subprocesses on loopback, Banking77 ingested into a local store and embedded with MiniLM-L6,
simulated active learning for several strategies and seeds (random further, to 2x the
budget, for the sample saving ratio), MiniLM-L6 successors fine-tuned on what margin and
random acquired, a JSON report, a PNG learning curve, the run directory (`out/run`) and its
`proxal report` (`out/report/report.md`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from proxal.orchestrator_service.demo.simulate import (
    DataSource,
    SimulateConfig,
    SimulateOutcome,
    run_simulate,
)
from proxal.orchestrator_service.engine.simulation import LoopConfig
from proxal.orchestrator_service.successor.config import SuccessorConfig

DATA_DIR = Path(__file__).resolve().parent / "data" / "banking77"
POOL = "banking77"


@dataclass(frozen=True)
class DemoConfig:
    """The demo's knobs; everything else is simulate's preset for Banking77."""

    out_dir: Path = Path("proxal-demo")
    backend: str = "torch"
    train_limit: int | None = None  # use N evenly spaced training rows (quick runs)
    test_limit: int | None = None
    loop: LoopConfig = field(default_factory=LoopConfig)
    successor_strategies: tuple[str, ...] = ("margin", "random")
    successor: SuccessorConfig = field(default_factory=SuccessorConfig)
    random_factor: float = 2.0


def simulate_config(config: DemoConfig) -> SimulateConfig:
    """The simulate run the demo is: Banking77's train and test files, pool 'banking77'."""
    return SimulateConfig(
        data=DataSource(
            train=DATA_DIR / "train.jsonl",
            test=DATA_DIR / "test.jsonl",
            train_limit=config.train_limit,
            test_limit=config.test_limit,
            name="banking77",
            licence="CC BY 4.0",
        ),
        out_dir=config.out_dir,
        pool=POOL,
        backend=config.backend,
        loop=config.loop,
        random_factor=config.random_factor,
        successor_strategies=config.successor_strategies,
        successor=config.successor,
        run_prefix="demo",
    )


def run_demo(config: DemoConfig) -> SimulateOutcome:
    """Run the demo; its report is also written to out_dir/report.json."""
    return run_simulate(simulate_config(config))
