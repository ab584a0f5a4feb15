"""The test cluster itself, before anything of ftlaunch runs on it.

If these fail, every other SLURM test fails for a reason that is not ftlaunch's: both nodes must be
idle in partition ``debug``, and submitit (which the SLURM backend submits through) must run one task
on each node and read the job's state back from accounting.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import wait_for

pytestmark = pytest.mark.slurm


def node_states() -> set[tuple[str, str]]:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %T"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return {(name, state) for name, state in (line.split() for line in out.splitlines())}


def test_two_idle_nodes(slurm_cluster: Path) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm_cluster)
    # Jobs of an earlier test in this session may still be ending.
    wait_for(lambda: node_states() == {("n1", "idle"), ("n2", "idle")}, 60, "n1 and n2 idle")


def test_submitit_runs_one_task_per_node(slurm_cluster: Path, tmp_path: Path) -> None:
    import submitit

    def where() -> tuple[str, str]:  # nested: cloudpickle ships it by value, no import needed there
        return os.environ["SLURM_NODEID"], os.environ["SLURMD_NODENAME"]

    executor = submitit.AutoExecutor(folder=tmp_path / "%j")
    assert executor.cluster == "slurm"
    executor.update_parameters(nodes=2, tasks_per_node=1, timeout_min=5, slurm_partition="debug")
    job = executor.submit(where)
    try:
        wait_for(job.done, 120, f"job {job.job_id} to finish")
    except AssertionError:
        job.cancel(check=False)
        raise
    assert sorted(job.results()) == [("0", "n1"), ("1", "n2")], job.stderr()
    # submitit throttles sacct (after 0, 2, 4, 8 s...), so state can read UNKNOWN for a while.
    assert wait_for(lambda: job.state == "COMPLETED", 30, "sacct to say COMPLETED")
