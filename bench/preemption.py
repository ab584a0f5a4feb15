"""What a pre-emption costs, measured side by side on the tiny model (2 CPU processes, ZeRO-2).

Run: ``python bench/preemption.py``. Prints
- steps lost when a run is stopped between two saves: with the pre-emption signal (SIGUSR2: every
  rank saves at the step it arrived) against a hard kill (SIGKILL: back to the last interval save);
- the time from a restart (``ftlaunch resume``) to its first new training step, against the time a
  fresh start of the same run takes to its first step (ratio; imports and model load dominate both).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--procs", "2", "--zero", "2", "--micro-batch", "2", "--grad-accum", "2", "--save-steps", "10"]
TRAIN = ["--max_steps", "40", "--logging_steps", "1", "--report_to", "none"]
STOP_AT = 15  # between the saves at 10 and 20


def ftlaunch(*argv: str) -> list[str]:
    return [sys.executable, "-m", "launcher", *argv]


def records(attempt: Path) -> list[dict[str, Any]]:
    path = attempt / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if "loss" in r]


def attempt_dir(runs: Path, number: int) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run / "attempts" / str(number)


def wait_for_step(runs: Path, step: int) -> None:
    while True:
        found = list(runs.glob("*/attempts/1/metrics.jsonl"))
        if found and records(found[0].parent) and records(found[0].parent)[-1]["step"] >= step:
            return
        time.sleep(0.02)


def stop_midway(runs: Path, how: signal.Signals, env: dict[str, str]) -> tuple[int, int]:
    """(step when stopped, step the resume starts after)."""
    proc = subprocess.Popen(
        ftlaunch("--runs-dir", str(runs), *FLAGS, "jobs/sft.py", *TRAIN),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_step(runs, STOP_AT)
    reached = records(attempt_dir(runs, 1))[-1]["step"]
    if how == signal.SIGKILL:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in tree:
            p.kill()
    else:
        os.kill(proc.pid, how)
    proc.wait(timeout=300)
    return reached, resume_point(runs)


def resume_point(runs: Path) -> int:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    marked = [
        int(p.parent.name.split("-")[1]) for p in (run / "checkpoints").glob("*/ftlaunch_complete.json")
    ]
    return max(marked, default=0)


def seconds_to_first_step(argv: list[str], runs: Path, attempt: int, env: dict[str, str]) -> float:
    start = time.time()
    subprocess.run(argv, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return float(records(attempt_dir(runs, attempt))[0]["time"]) - start


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="ftlaunch-bench-"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "FTLAUNCH_TINY_DIR": str(work / "tiny"),
    }
    subprocess.run(
        [sys.executable, "jobs/make_tiny.py", str(work / "tiny")],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    fresh_runs = work / "fresh"
    fresh = seconds_to_first_step(
        ftlaunch("--runs-dir", str(fresh_runs), *FLAGS, "jobs/sft.py", *TRAIN), fresh_runs, 1, env
    )
    print(f"fresh start to first step:        {fresh:6.1f} s")
    for how in (signal.SIGUSR2, signal.SIGKILL):
        runs = work / how.name
        reached, saved = stop_midway(runs, how, env)
        lost = max(0, reached - saved)  # the step in flight when the signal came is finished and saved
        print(f"{how.name:<8} sent at step {reached:>3}: resumes after step {saved:>3}, steps lost: {lost}")
        if how == signal.SIGUSR2:
            (run,) = [p for p in runs.iterdir() if p.is_dir()]
            restart = seconds_to_first_step(
                ftlaunch("resume", "--runs-dir", str(runs), run.name), runs, 2, env
            )
            ratio = restart / fresh
            print(f"restart (resume) to first new step: {restart:6.1f} s = {ratio:.2f} x a fresh start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
