"""Run folders are never reused, written atomically, and keep no secrets."""

from __future__ import annotations

import os
from pathlib import Path

from launcher import rundir
from launcher.backends.local import report
from launcher.rules import Resolved, validate
from launcher.spec import LaunchSpec, Topology


def test_each_launch_gets_a_new_folder(tmp_path: Path) -> None:
    made = {rundir.create(tmp_path, "sft") for _ in range(5)}
    assert len(made) == 5 and all(p.parent == tmp_path and (p / "logs").is_dir() for p in made)


def test_names_are_safe(tmp_path: Path) -> None:
    assert rundir.create(tmp_path, "my run/../x").name.startswith("my-run-..-x-")


def test_credentials_are_never_recorded() -> None:
    env = {
        "HF_TOKEN": "hf_x",
        "WANDB_API_KEY": "k",
        "NCCL_DEBUG": "INFO",
        "HF_HOME": "/h",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "s",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }
    assert rundir.recorded_env(env) == {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/h", "NCCL_DEBUG": "INFO"}


def test_status_updates_merge(tmp_path: Path) -> None:
    rundir.update_status(tmp_path, state="running", world_size=2)
    rundir.update_status(tmp_path, state="finished", exit_code=0)
    assert rundir.read_json(tmp_path / rundir.STATUS) == {
        "state": "finished",
        "world_size": 2,
        "exit_code": 0,
    }
    assert [p.name for p in tmp_path.iterdir()] == [rundir.STATUS], "no temp file left behind"


def _run_with_markers(tmp_path: Path, ranks: int) -> tuple[Path, Resolved]:
    run = rundir.create(tmp_path, "r")
    for rank in range(ranks):
        rundir.write_json(run / rundir.DONE / f"rank{rank}.json", {"rank": rank, "world_size": 2})
    return run, validate(LaunchSpec(topology=Topology(procs=2)))


def test_crash_at_shutdown_after_training_is_reported_as_finished(tmp_path: Path) -> None:
    run, resolved = _run_with_markers(tmp_path, ranks=2)
    assert report(resolved, run, exit_code=134, interrupted=False) == 0
    status = rundir.read_json(run / rundir.STATUS)
    assert status["state"] == "finished" and status["shutdown_crash"] is True and status["exit_code"] == 134


def test_missing_completion_marker_is_a_failure_whatever_the_exit_code(tmp_path: Path) -> None:
    run, resolved = _run_with_markers(tmp_path, ranks=1)
    assert report(resolved, run, exit_code=0, interrupted=False) == 1
    assert rundir.read_json(run / rundir.STATUS)["state"] == "failed"


def test_a_running_run_whose_launcher_died_is_lost(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    run = rundir.create(tmp_path, "r")
    rundir.write_json(run / rundir.SPEC, {})
    rundir.update_status(run, state="running", launcher_pid=int(gone.stdout))
    assert [r.state for r in rundir.list_runs(tmp_path)] == ["lost"]
    rundir.update_status(run, launcher_pid=os.getpid())
    assert [r.state for r in rundir.list_runs(tmp_path)] == ["running"]
