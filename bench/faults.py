"""Hard faults, timed: from a fault to its detection, and from the fault to the restarted run's
first new step, against a fresh start's time to its first step, side by side in one run.

Run: ``python bench/faults.py [--hang-timeout S]``. One launch of

    ftlaunch --procs 2 --zero 2 --hang-timeout S jobs/sft.py --use_peft --max_steps 40 --save_steps 4

on the tiny model (2 CPU processes). At step 6 rank 1 is stopped (SIGSTOP: a rank stuck in a
collective); in the restarted attempt, at its second new step, rank 1 is killed (SIGKILL: a rank
that died). Each fault's detection is when the run folder says so (``hangs/node0.json``, or the attempt's
verdict); each restart's first new step is the first record in the new attempt's ``metrics.jsonl``.
The goals (issue 18): detection within the hang timeout + 5 s; fault to the next first step within
1.2x a fresh start's time to its first step plus that detection.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, ftlaunch, machine, metrics, read_json, tiny_env, versions


def attempt_dir(runs: Path, number: int) -> Path | None:
    found = [p for p in runs.iterdir() if p.is_dir()] if runs.is_dir() else []
    return found[0] / "attempts" / str(number) if found else None


def wait(predicate, timeout: float = 600):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"bench/faults.py: gave up after {timeout} s")


def first_record_time(runs: Path, number: int, min_step: int = 0) -> float | None:
    folder = attempt_dir(runs, number)
    records = [r for r in metrics(folder) if r.get("step", 0) > min_step] if folder else []
    return float(records[0]["time"]) if records else None


def step_reached(runs: Path, number: int, step: int) -> bool:
    folder = attempt_dir(runs, number)
    return bool(folder) and any(r.get("step", 0) >= step for r in metrics(folder))  # type: ignore[arg-type]


def rank_pid(runs: Path, number: int, rank: int) -> int:
    folder = attempt_dir(runs, number)
    assert folder is not None
    return int(json.loads((folder / "heartbeats" / f"rank{rank}.json").read_text())["pid"])


def resumed_step(runs: Path, number: int) -> int:
    """The checkpoint step attempt ``number`` resumed from (its ``decided.json``, once written)."""

    def decided() -> dict[str, object]:
        folder = attempt_dir(runs, number)
        return read_json(folder / "decided.json") if folder else {}

    resume = wait(decided)["resume"]
    return int(resume["step"])


def ended(runs: Path, number: int) -> float | None:
    folder = attempt_dir(runs, number)
    status = read_json(folder / "status.json") if folder else {}
    return float(status["ended"]) if "ended" in status else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hang-timeout", type=float, default=10.0, help="seconds (default 10)")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = tiny_env(work)
        runs = work / "runs"
        argv = ftlaunch(
            *["--runs-dir", str(runs), "--procs", "2", "--zero", "2", "--hang-timeout", str(ns.hang_timeout)],
            *["jobs/sft.py", "--use_peft", "--max_steps", "40", "--save_steps", "4"],
            *["--logging_steps", "1", "--report_to", "none"],
        )
        started = time.time()
        launch = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        fresh = wait(lambda: first_record_time(runs, 1)) - started

        wait(lambda: step_reached(runs, 1, 6))
        os.kill(rank_pid(runs, 1, 1), signal.SIGSTOP)
        stopped = time.time()
        hang = wait(lambda: read_json(attempt_dir(runs, 1) / "hangs" / "node0.json"))  # type: ignore[operator]
        detected = float(hang["detected"]) - stopped
        resumed_at = resumed_step(runs, 2)
        hang_restart = wait(lambda: first_record_time(runs, 2, resumed_at)) - stopped

        wait(lambda: step_reached(runs, 2, resumed_at + 2))
        os.kill(rank_pid(runs, 2, 1), signal.SIGKILL)
        killed = time.time()
        death = wait(lambda: ended(runs, 2)) - killed
        resumed_at = resumed_step(runs, 3)
        kill_restart = wait(lambda: first_record_time(runs, 3, resumed_at)) - killed
        launch.wait(timeout=600)

    print(f"# {machine()}; {versions()}; --hang-timeout {ns.hang_timeout:g}")
    print(f"{'':44} {'seconds':>8} {'goal':>22}")
    print(f"{'fresh start: command -> first step':44} {fresh:8.1f}")
    print(f"{'SIGSTOP rank 1 -> reported hung':44} {detected:8.1f} {'<= ' + f'{ns.hang_timeout + 5:g}':>22}")
    goal = 1.2 * fresh + detected
    print(f"{'SIGSTOP rank 1 -> restarted first step':44} {hang_restart:8.1f} {f'<= {goal:.1f}':>22}")
    print(f"{'SIGKILL rank 1 -> attempt ended':44} {death:8.1f}")
    goal = 1.2 * fresh + death
    print(f"{'SIGKILL rank 1 -> restarted first step':44} {kill_restart:8.1f} {f'<= {goal:.1f}':>22}")
    ratio = (hang_restart - detected) / fresh
    print(f"restart after detection vs fresh start: {ratio:.2f}x (goal <= 1.2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
