"""Faults on the real 2-node cluster (``jobs/sft.py`` through ``tests/recipes/faulty_sft.py``, ZeRO-2,
one CPU process per node), one run through all of them: a rank that stops on node 1, a rank killed
there, node 1's supervisor killed (its torchrun and rank end with it: node 1 is gone, as when the
node is lost), then a pre-emption (SLURM's USR2).

Each fault is found in seconds on both nodes, the attempt records which node and rank, and the job
goes on by itself from its latest complete checkpoint, training the steps it repeats exactly as
before: in place on the same nodes after the stopped and the killed rank, requeued by SLURM after
the lost supervisor. The pre-emption saves at the step the signal arrived, is requeued by submitit and
resumed from that very step without counting as a restart. The same rules decide a local restart
(``tests/e2e/test_hard_faults.py``, which also covers a recipe error and a slow save)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from launcher.records import rundir
from launcher.records.runs import RunInfo
from launcher.run.stacks import innermost_frame

from .conftest import wait_for
from .test_launch import REPO, ftlaunch, losses, only_run, sacct_state

pytestmark = pytest.mark.slurm

RECIPE = REPO / "tests" / "recipes" / "faulty_sft.py"
TIMEOUT = 10  # --hang-timeout
FLAGS = ["--slurm", "--nodes", "2", "--procs", "1", "--partition", "debug", "--zero", "2"]
FLAGS += ["--precision", "fp32", "--hang-timeout", str(TIMEOUT), "--max-restarts", "3"]
TRAIN = ["--max_steps", "22", "--save_steps", "4", "--logging_steps", "1", "--report_to", "none"]
TRAIN += ["--learning_rate", "1e-3", "--lr_scheduler_type", "constant", "--seed", "7"]


def at_step(run: RunInfo, number: int, step: int) -> Path | None:
    attempt = rundir.attempt_path(run.path, number)
    return attempt if max(losses(attempt), default=0) >= step else None


def rank1_pid(attempt: Path) -> int:
    return int(json.loads((attempt / rundir.HEARTBEATS / "rank1.json").read_text())["pid"])


def node_task_tree(rank_pid: int) -> list[psutil.Process]:
    """Node 1's ftlaunch task (submitit's process on that node) and everything under it."""
    (task,) = [
        p for p in psutil.Process(rank_pid).parents() if "submitit.core._submit" in " ".join(p.cmdline())
    ]
    return [task, *task.children(recursive=True)]


def ended(attempt: Path) -> float | None:
    status = rundir.read_json_quiet(attempt / rundir.STATUS)
    return float(status["ended"]) if "ended" in status else None


def test_a_stopped_rank_a_killed_rank_a_lost_node_and_a_preemption_each_restart_the_job(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    started = ftlaunch(["--runs-dir", str(runs), *FLAGS, str(RECIPE), *TRAIN], slurm_env, REPO)
    assert started.returncode == 0, started.stderr
    run = only_run(runs)
    attempts = [rundir.attempt_path(run.path, n) for n in (1, 2, 3, 4, 5)]

    first = wait_for(lambda: at_step(run, 1, 5), 300, "attempt 1 at step 5")
    os.kill(rank1_pid(first), signal.SIGSTOP)  # node 1's rank stops: node 0's waits in a collective
    stopped_at = time.time()
    second = wait_for(lambda: at_step(run, 2, 9), 300, "attempt 2 at step 9")
    os.kill(rank1_pid(second), signal.SIGKILL)
    killed_at = time.time()
    third = wait_for(lambda: at_step(run, 3, 13), 300, "attempt 3 at step 13")
    tree = node_task_tree(rank1_pid(third))
    tree[0].kill()  # node 1's ftlaunch task (its supervisor) dies: what is under it must follow
    lost_at = time.time()
    wait_for(lambda: at_step(run, 4, 14), 300, "attempt 4 at step 14")
    subprocess.run(["scancel", "--signal=USR2", run.job_ids[0]], env=slurm_env, check=True)
    wait_for(
        lambda: rundir.read_json_quiet(attempts[4] / rundir.STATUS).get("state") == "finished",
        400,
        "attempt 5 to finish",
    )

    statuses = [rundir.read_json(a / rundir.STATUS) for a in attempts]
    assert [s["state"] for s in statuses] == ["hung", "failed", "failed", "requeued", "finished"], statuses
    assert [s.get("restart") for s in statuses] == [None, 1, 2, 3, None], "a pre-emption is no restart"
    assert len(only_run(runs).job_ids) == 1, "every restart is in the same job"
    in_place = [bool(s.get("in_place")) for s in statuses]
    assert in_place == [False, True, True, False, False], "only a lost node (and SLURM's USR2) requeues"

    # The stopped rank: found on its own node within the timeout, named on the head, stacks kept.
    hang = rundir.read_json(first / rundir.HANGS / "node1.json")
    assert hang["rank"] == 1 and "the process is stopped" in hang["lines"][0], hang
    assert hang["detected"] - stopped_at <= TIMEOUT + 5, hang["detected"] - stopped_at
    assert statuses[0]["message"].startswith("node 1 (n2) ended the attempt: hung: rank 1 (node 1)")
    for rank in (0, 1):  # rank 1 is stopped: py-spy reads it; rank 0 waits in the collective
        assert innermost_frame((first / rundir.LOGS / rundir.STACKS / f"rank{rank}.txt").read_text())
    assert statuses[1]["cause"].startswith("attempt 1 node 1 (n2) ended the attempt: hung")

    # The killed rank and the lost node: node 0 ended within 15 s, and said which node it was.
    assert (ended(second) or 1e12) - killed_at < 15, statuses[1]
    assert statuses[1]["message"].startswith("node 1 (n2) ended the attempt: failed"), statuses[1]
    assert (ended(third) or 1e12) - lost_at < 15, statuses[2]
    assert "node 1 (n2) is gone" in statuses[2]["message"], statuses[2]
    wait_for(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree),
        10,
        "node 1's torchrun and rank to end with their supervisor",
    )

    # The last attempt trained to the end on both nodes, one process each; SLURM says so too.
    markers = [rundir.read_json(p) for p in (attempts[4] / rundir.DONE).glob("rank*.json")]
    assert sorted(m["rank"] for m in markers) == [0, 1] and {m["world_size"] for m in markers} == {2}
    assert len(set(statuses[4]["hosts"])) == 2
    wait_for(lambda: sacct_state(run.job_ids[0], slurm_env) == "COMPLETED", 60, "SLURM to say COMPLETED")

    # The pre-emption: every rank saved at the step the signal arrived; attempt 5 resumed there.
    saved = rundir.read_json(attempts[3] / rundir.PREEMPTED)["step"]
    assert 14 <= saved < 20, "saved at the step the signal arrived, before the next interval"
    assert rundir.read_json(attempts[4] / "decided.json")["resume"]["step"] == saved

    # Each restart continued from the checkpoint before its fault (every fault comes one step or two
    # after a save: steps 5, 9, 13 with a save every 4) and trained the repeated steps identically.
    trained = [losses(a) for a in attempts]
    assert [min(t) - 1 for t in trained[1:]] == [4, 8, 12, saved], [sorted(t) for t in trained]
    assert max(trained[4]) == 22
    for number, (before, after) in enumerate(itertools.pairwise(trained), 1):
        repeated = sorted(before.keys() & after.keys())
        assert bool(repeated) == (number < 4), (number, before.keys(), after.keys())  # none after the save
        for step in repeated:
            assert after[step] == pytest.approx(before[step], rel=1e-6), step


def test_a_node_that_failed_twice_is_excluded_and_a_repeated_recipe_error_is_not_requeued(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """A 1-node job on the 2-node partition: its rank is killed on the same node in attempts 1
    and 2 (the first restart is in place), so the job is requeued leaving that node out, and
    attempt 3 runs on the other; there the recipe raises at step 5, and again in attempt 4 (in
    place), which ends the job: the recipe's error, not the machine's."""
    runs = tmp_path / "runs"
    env = {**slurm_env, "FTLAUNCH_TEST_FAULT": "kill@3,2;raise@5,3"}
    flags = ["--slurm", "--nodes", "1", "--procs", "1", "--partition", "debug", "--zero", "0"]
    flags += ["--precision", "fp32", "--max-restarts", "5"]
    train = ["--use_peft", "--max_steps", "8", "--save_steps", "2", "--logging_steps", "1"]
    started = ftlaunch(
        ["--runs-dir", str(runs), *flags, str(RECIPE), *train, "--report_to", "none"], env, REPO
    )
    assert started.returncode == 0, started.stderr
    run = only_run(runs)
    job = run.job_ids[0]
    wait_for(lambda: sacct_state(job, slurm_env) == "FAILED", 400, "the job to fail for good")

    attempts = only_run(runs).attempts
    statuses = [a.status for a in attempts]
    assert [s["state"] for s in statuses] == ["failed"] * 4, statuses
    assert [s.get("restart") for s in statuses] == [None, 1, 2, 3]
    assert [bool(s.get("in_place")) for s in statuses] == [False, True, False, True], "requeued to exclude"
    hosts = [s["hosts"][0] for s in statuses]
    assert hosts[0] == hosts[1] and hosts[2] == hosts[3] != hosts[0], hosts
    assert [s.get("fault_host") for s in statuses] == [hosts[0], hosts[0], None, None], statuses
    assert statuses[1]["excluded"] == [hosts[0]], "left out after its second fault"
    logs = "".join(p.read_text(errors="replace") for p in (run.path / rundir.SLURM).glob("*.err"))
    assert f"excluding {hosts[0]} from job {job}" in logs
    assert 'not restarted: the recipe raised "ValueError: a bug in the recipe at step 5"' in logs.replace(
        "'", '"'
    ), logs[-3000:]
    shown = ftlaunch(["status", str(run.path)], slurm_env, REPO, timeout=60).stdout
    assert f"excluded: {hosts[0]}" in shown and f"fault_host: {hosts[0]}" in shown, shown
