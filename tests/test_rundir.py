"""Run folders are never reused, written atomically, and keep no secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher import redact
from launcher.records import rundir
from launcher.records import verdict as verdicts
from launcher.records.runs import find_run, list_runs
from launcher.records.verdict import judge


def test_each_launch_gets_a_new_folder(tmp_path: Path) -> None:
    made = {rundir.create(tmp_path, "sft") for _ in range(5)}
    assert len(made) == 5 and all(p.parent == tmp_path and (p / "attempts").is_dir() for p in made)


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
    assert redact.recorded_env(env) == {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/h", "NCCL_DEBUG": "INFO"}


def test_status_updates_merge(tmp_path: Path) -> None:
    rundir.update_status(tmp_path, state="running", world_size=2)
    rundir.update_status(tmp_path, state="finished", exit_code=0)
    assert rundir.read_json(tmp_path / rundir.STATUS) == {
        "state": "finished",
        "world_size": 2,
        "exit_code": 0,
    }
    assert [p.name for p in tmp_path.iterdir()] == [rundir.STATUS], "no temp file left behind"


def _attempt_with_markers(tmp_path: Path, ranks: int) -> Path:
    attempt = rundir.write_attempt(rundir.create(tmp_path, "r"), 1, {})
    for rank in range(ranks):
        rundir.write_json(attempt / rundir.DONE / f"rank{rank}.json", {"rank": rank, "world_size": 2})
    return attempt


def test_crash_at_shutdown_after_training_is_reported_as_finished(tmp_path: Path) -> None:
    attempt = _attempt_with_markers(tmp_path, ranks=2)
    verdict = judge(attempt, node_rank=0, world_size=2, exit_code=134)
    assert (verdict.state, verdict.exit_code) == ("finished", 0)
    assert "crashed at shutdown" in verdict.message


def test_missing_completion_marker_is_a_failure_whatever_the_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verdicts, "MARKER_WAIT_SECONDS", 0.2)
    attempt = _attempt_with_markers(tmp_path, ranks=1)
    verdict = judge(attempt, node_rank=0, world_size=2, exit_code=0)
    assert (verdict.state, verdict.exit_code) == ("failed", 1)
    assert "1/2 ranks" in verdict.message


def test_a_running_run_whose_launcher_died_is_lost(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    run = rundir.create(tmp_path, "r")
    rundir.write_json(run / rundir.SPEC, {})
    attempt = rundir.write_attempt(run, 1, {})
    rundir.update_status(attempt, state="running", launcher_pid=int(gone.stdout))
    assert [r.state for r in list_runs(tmp_path)] == ["lost"]
    rundir.update_status(attempt, launcher_pid=os.getpid())
    assert [r.state for r in list_runs(tmp_path)] == ["running"]


def test_attempts_keep_their_own_files_and_requeued_nodes_never_overwrite(tmp_path: Path) -> None:
    run = rundir.create(tmp_path, "r")
    first = rundir.write_attempt(run, 1, {"plan.json": "one\n"})
    second = rundir.write_attempt(run, 2, {"plan.json": "two\n"})
    again = rundir.write_attempt(run, 2, {"plan.json": "changed\n"})  # another node of attempt 2
    assert again == second and (second / "plan.json").read_text() == "two\n"
    assert (first / "plan.json").read_text() == "one\n"
    assert rundir.attempt_numbers(run) == [1, 2] and rundir.latest_attempt(run) == second


def test_a_corrupt_status_is_reported_not_fatal(tmp_path: Path) -> None:
    run = rundir.create(tmp_path, "r")
    rundir.write_json(run / rundir.SPEC, {})
    (rundir.write_attempt(run, 1, {}) / rundir.STATUS).write_text("{not json")
    (info,) = list_runs(tmp_path)
    assert info.state == "unreadable" and "unreadable" in info.problems[0]


def test_runs_are_found_by_path_name_or_unique_prefix(tmp_path: Path) -> None:
    a = rundir.create(tmp_path, "alpha")
    b = rundir.create(tmp_path, "beta")
    for run in (a, b):
        rundir.write_json(run / rundir.SPEC, {})
    assert find_run(tmp_path, str(a)) == a
    assert find_run(tmp_path, b.name) == b
    assert find_run(tmp_path, "alp") == a
    with pytest.raises(LookupError, match="no run 'gamma'"):
        find_run(tmp_path, "gamma")


def test_the_clock_asks_to_stop_only_when_a_step_and_a_save_no_longer_fit() -> None:
    import time

    from launcher.rank.saving import Clock

    assert Clock(None).step_ended() is None
    assert Clock(time.time() + 3600).step_ended() is None
    reason = Clock(time.time() + 5).step_ended()
    assert reason is not None and "s left" in reason and "a save 10.0 s (a guess" in reason
