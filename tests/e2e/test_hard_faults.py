"""Hard faults on a real launch (2 CPU processes, ZeRO-2, the tiny model): a rank that stops (the
classic collective hang), a rank that dies, a recipe that raises, a save that is slow but healthy.

A hang is found within the hang timeout and reported with the stuck rank and every rank's stack;
the run restarts by itself from its latest complete checkpoint, and the restarted attempt trains
the steps it repeats exactly as the attempt before did. A recipe error at the same step twice is
not retried; a slow save is not taken for a hang."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.records import rundir
from launcher.records.runs import list_runs
from launcher.run.stacks import innermost_frame

from .conftest import REPO
from .test_resume import losses

pytestmark = pytest.mark.e2e

RECIPE = REPO / "tests" / "recipes" / "faulty_sft.py"
TIMEOUT = 10  # --hang-timeout: the watchdog must find the hang within this + its poll and the stacks


def argv(runs: Path, *extra: str) -> list[str]:
    return [
        *[sys.executable, "-m", "launcher", "--runs-dir", str(runs), "--name", "faults"],
        *["--procs", "2", "--zero", "2", "--precision", "fp32", "--hang-timeout", str(TIMEOUT), *extra],
        str(RECIPE),
        *[
            "--max_steps",
            "12",
            "--save_steps",
            "3",
            "--logging_steps",
            "1",
            "--report_to",
            "none",
            "--learning_rate",
            "1e-3",
        ],
        *["--lr_scheduler_type", "constant", "--seed", "7"],
    ]


def heartbeat(attempt: Path, rank: int) -> dict[str, object]:
    return dict(json.loads((attempt / rundir.HEARTBEATS / f"rank{rank}.json").read_text()))


def wait_for(predicate, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def attempt_at_step(runs: Path, number: int, step: int) -> Path | None:
    found = list_runs(runs)
    attempt = rundir.attempt_path(found[-1].path, number) if found else None
    if attempt and (attempt / rundir.METRICS).exists() and max(losses(attempt), default=0) >= step:
        return attempt
    return None


def test_a_stopped_rank_then_a_killed_rank_the_run_restarts_each_time_and_finishes(
    e2e_env: dict[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    launch = subprocess.Popen(
        argv(runs), cwd=REPO, env=e2e_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        first = wait_for(lambda: attempt_at_step(runs, 1, 5), 300)
        stopped = int(heartbeat(first, 1)["pid"])  # type: ignore[call-overload]
        os.kill(stopped, signal.SIGSTOP)
        stopped_at = time.time()
        wait_for(lambda: attempt_at_step(runs, 2, 1), 300)
        hang = json.loads((first / rundir.HANGS / "node0.json").read_text())
        found_after = hang["detected"] - stopped_at
        second = wait_for(lambda: attempt_at_step(runs, 2, 8), 300)
        os.kill(int(heartbeat(second, 1)["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        output, _ = launch.communicate(timeout=400)
    finally:
        if launch.poll() is None:
            launch.kill()
    text = output.decode(errors="replace")
    assert launch.returncode == 0, text[-3000:]
    run = list_runs(runs)[-1]
    states = [a.state for a in run.attempts]
    assert states == ["hung", "failed", "finished"], text[-3000:]

    # The hang: found within the timeout (plus the poll and the stacks), the stopped rank named.
    assert found_after <= TIMEOUT + 5, found_after
    assert hang["rank"] == 1 and "the process is stopped" in hang["lines"][0], hang
    assert " in " in hang["lines"][0].split("a debugger holds it)")[1], "py-spy read the stopped rank"
    assert "rank 1 (node 0) made no progress for" in text and "hung:" in text
    for rank in (0, 1):
        assert innermost_frame((first / rundir.LOGS / rundir.STACKS / f"rank{rank}.txt").read_text())
    assert "rank 0 (node 0) waited" in hang["lines"][1] and " in " in hang["lines"][1], hang["lines"]
    assert not psutil.pid_exists(stopped) or psutil.Process(stopped).status() == psutil.STATUS_ZOMBIE

    # Each restart says why, continues from the latest complete checkpoint and finishes the run.
    statuses = [a.status for a in run.attempts]
    assert [s.get("restart") for s in statuses] == [None, 1, 2]
    assert statuses[1]["cause"].startswith("attempt 1 hung: rank 1")
    assert statuses[2]["cause"].startswith("attempt 2 failed")
    assert "ftlaunch: restart 1/2 after attempt 1 hung" in text
    attempts = [a.path for a in run.attempts]
    trained = [losses(a) for a in attempts]
    assert max(trained[2]) == 12
    for before, after in itertools.pairwise(trained):
        repeated = sorted(before.keys() & after.keys())
        assert repeated, (before.keys(), after.keys())  # a restart repeats the steps since the checkpoint
        for step in repeated:
            assert after[step] == pytest.approx(before[step], rel=1e-6), step

    status = subprocess.run(
        [sys.executable, "-m", "launcher", "status", str(run.path)], cwd=REPO, capture_output=True, text=True
    )
    assert status.returncode == 0 and "restart 1, after: attempt 1 hung: rank 1" in status.stdout


def test_a_recipe_error_at_the_same_step_is_tried_once_more_then_left(
    e2e_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**e2e_env, "FTLAUNCH_TEST_FAULT": "raise@5"}
    done = subprocess.run(
        argv(tmp_path / "runs"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode != 0
    run = list_runs(tmp_path / "runs")[-1]
    assert [a.state for a in run.attempts] == ["failed", "failed"], done.stderr[-3000:]
    assert (
        "not restarted: the recipe raised 'ValueError: a bug in the recipe at step 5' at step" in done.stderr
    )


def test_a_save_slower_than_the_hang_timeout_is_not_a_hang(e2e_env: dict[str, str], tmp_path: Path) -> None:
    env = {**e2e_env, "FTLAUNCH_TEST_FAULT": f"slow_save@{TIMEOUT + 8}"}
    done = subprocess.run(
        argv(tmp_path / "runs", "--max-restarts", "0"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (attempt,) = list_runs(tmp_path / "runs")[-1].attempts
    assert attempt.state == "finished" and not (attempt.path / rundir.HANGS).exists()
