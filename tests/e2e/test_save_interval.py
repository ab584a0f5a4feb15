"""``--save-every auto`` on a real launch (2 CPU processes, ZeRO-2, the tiny model), with saves that
take a known extra time (1 s, then 3 s from the third save on, as under disk pressure):

- the ranks save at the interval the rule predicts from the save cost they measured and the step
  time the run's own log shows (within one step), and that interval grows when saves get slower;
- saving costs at most the overhead bound over the run;
- a rank killed at a random moment loses at most ``--max-lost`` of training.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from launcher.records import rundir
from launcher.records.runs import list_runs

from .conftest import REPO

pytestmark = pytest.mark.e2e

RECIPE = REPO / "tests" / "recipes" / "faulty_sft.py"
OVERHEAD, MAX_LOST = 0.25, 20.0


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_auto_interval_follows_the_measured_save_cost_within_its_bounds(
    e2e_env: dict[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    argv = [
        *[sys.executable, "-m", "launcher", "--runs-dir", str(runs), "--procs", "2", "--zero", "2"],
        *["--save-every", "auto", "--save-overhead", f"{OVERHEAD:.0%}", "--max-lost", f"{MAX_LOST:g}s"],
        *["--max-restarts", "0", str(RECIPE), "--max_steps", "2000", "--logging_steps", "1"],
        *["--report_to", "none", "--learning_rate", "1e-3"],
    ]
    env = {**e2e_env, "FTLAUNCH_TEST_FAULT": "save_sleep@1,3,3"}
    launch = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        attempt = wait_for_saves(runs, 4, timeout=400)
        time.sleep(random.uniform(1.0, 10.0))  # a random moment of the interval after the 4th save
        killed_at = time.time()
        os.kill(
            int(json.loads((attempt / rundir.HEARTBEATS / "rank1.json").read_text())["pid"]), signal.SIGKILL
        )
        output, _ = launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            launch.kill()
    text = output.decode(errors="replace")
    saves = records(attempt / rundir.SAVES)
    logged = {r["step"]: r["time"] for r in records(attempt / rundir.METRICS) if "loss" in r}

    # The saves were timed, the extra cost seen, and each interval the one chosen after the last.
    assert [s["mode"] for s in saves] == ["auto"] * len(saves)
    assert 1.0 <= saves[0]["seconds"] < 3.0 and saves[-1]["seconds"] >= 3.0, saves
    for before, after in itertools.pairwise(saves):
        assert after["step"] - before["step"] == before["interval"], saves
    # ... the rule's: from the measured save and the step time the log shows, within one step.
    for number, save in enumerate(saves):
        step = step_seconds(logged, save["step"], {s["step"] for s in saves})
        cost = max(s["seconds"] for s in saves[max(0, number - 2) : number + 1])  # the last 3 saves
        predicted = math.ceil(cost * (1 - OVERHEAD) / (OVERHEAD * step))
        assert abs(save["interval"] - predicted) <= 1, (save, step, predicted)
    assert saves[-1]["interval"] > saves[1]["interval"], "slower saves, a longer interval"
    assert "ftlaunch: checkpoint every" in text

    # Saving cost at most the bound wherever the cost held (the interval after a change of cost is
    # chosen from the cost before it: the rule follows a measured change, it does not foresee it).
    steady = [
        (b, a) for b, a in itertools.pairwise(saves) if abs(a["seconds"] - b["seconds"]) < 0.2 * b["seconds"]
    ]
    assert len(steady) >= 2, saves
    spent = sum(a["seconds"] for _, a in steady)
    assert spent / sum(a["time"] - b["time"] for b, a in steady) <= OVERHEAD * 1.1, saves

    # The kill lost at most --max-lost of training: back to the last complete checkpoint.
    last = saves[-1]["step"]
    assert (rundir.checkpoints_of(attempt) / f"checkpoint-{last}").is_dir()
    lost = killed_at - logged[last]
    assert 0 < lost <= MAX_LOST, (lost, last)


def wait_for_saves(runs: Path, count: int, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_runs(runs) if runs.exists() else []
        attempt = rundir.attempt_path(found[-1].path, 1) if found else None
        if attempt is not None and len(records(attempt / rundir.SAVES)) >= count:
            return attempt
        time.sleep(0.2)
    raise AssertionError(f"not {count} saves within {timeout} s")


def step_seconds(logged: dict[int, float], save_step: int, saved: set[int]) -> float:
    """The 25th percentile of the last 50 steps before ``save_step`` from rank 0's log, the step
    that held a save and the first left out: the fast step the ranks keep the overhead against,
    measured independently."""
    steps = sorted(s for s in logged if s <= save_step)
    gaps = [logged[b] - logged[a] for a, b in itertools.pairwise(steps) if b == a + 1 and a not in saved]
    recent = sorted(gaps[-50:])
    return recent[int(0.25 * len(recent))]
