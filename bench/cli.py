"""Start-up time of `proxal` commands, now and before the lazy-import change.

    .venv/bin/python bench/cli.py [--runs 7] [--baseline-rev 92d8cb3] [--out bench/results/cli.json]

Starts one `proxal serve` on an empty temporary store, then times each command from
spawn to exit (the median of --runs runs): `proxal --help`, and `label`, `session status`
and `labels export` against that server for a session that does not exist, so each one
starts, makes one call, is answered NOT_FOUND and exits. The same commands run on the
code of --baseline-rev (unpacked with `git archive` into a temporary directory; its
`python -m proxal.orchestrator_service` resolves there), side by side. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_REV = "92d8cb3"  # main before the fast-CLI change (issue 15)
TARGET_S = 0.5  # the bound for the four gRPC-only commands


def commands(address: str, out: Path) -> dict[str, list[str]]:
    """Name -> arguments after `proxal`."""
    server = ["--orchestrator", address]
    return {
        "proxal --help": ["--help"],
        "proxal label": ["label", "nosuch", *server],
        "proxal session status": ["session", "status", "nosuch", *server],
        "proxal labels export": ["labels", "export", "nosuch", "-o", str(out), *server],
        "proxal ingest --help": ["ingest", "--help"],
        "proxal finetune --help": ["finetune", "--help"],
    }


def time_command(code_dir: Path, args: list[str], runs: int) -> tuple[float, list[float]]:
    """(median s, every run's s) of `python -m proxal.orchestrator_service ARGS` from `code_dir`."""
    env = {**os.environ, "LANCE_LOG": "error", "PYTHONPATH": str(code_dir)}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "proxal.orchestrator_service", *args],
            cwd=code_dir,
            env=env,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 2) and "NOT_FOUND" not in done.stderr.decode():
            raise RuntimeError(f"{args} failed in {code_dir}: {done.stderr.decode()[-500:]}")
    return statistics.median(times), times


def unpack(rev: str, into: Path) -> Path | None:
    """The tree of `rev` under `into`, or None when git cannot produce it."""
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True)
    if archive.returncode != 0:
        return None
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cli.json")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from proxal.orchestrator_service.rpc.processes import ServiceProcess
    from proxal.store import Store

    with tempfile.TemporaryDirectory(prefix="proxal-cli-bench-") as tmp:
        root = Path(tmp)
        store = Store(str(root / "store"), create=True).uri
        baseline = unpack(args.baseline_rev, root / "baseline")
        serve = ServiceProcess(
            "orchestrator",
            store,
            ["--proxy", "127.0.0.1:9"],  # never called: every session here is missing
            log_path=root / "serve.log",
            command=("serve",),
        )
        with serve:
            rows = []
            for name, cmd in commands(serve.address, root / "labels.jsonl").items():
                now, now_runs = time_command(REPO, cmd, args.runs)
                before, before_runs = (
                    time_command(baseline, cmd, args.runs) if baseline else (None, [])
                )
                rows.append(
                    {
                        "command": name,
                        "median_s": round(now, 3),
                        "before_median_s": None if before is None else round(before, 3),
                        "runs_s": [round(t, 3) for t in now_runs],
                        "before_runs_s": [round(t, 3) for t in before_runs],
                    }
                )
    print(f"{'command':<24} {'now (s)':>8} {'before (s)':>11} {'speed-up':>9}")
    for row in rows:
        now_s, before_s = row["median_s"], row["before_median_s"]
        assert isinstance(now_s, float)
        shown = f"{before_s:.3f}" if isinstance(before_s, float) else "-"
        ratio = f"{before_s / now_s:.1f}x" if isinstance(before_s, float) else "-"
        print(f"{row['command']:<24} {now_s:>8.3f} {shown:>11} {ratio:>9}")
    document = {
        "benchmark": "cli_startup",
        "runs": args.runs,
        "baseline_rev": args.baseline_rev,
        "target_s": TARGET_S,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
