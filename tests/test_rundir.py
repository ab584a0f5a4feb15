"""Run folders are never reused, written atomically, and keep no secrets."""

from __future__ import annotations

from pathlib import Path

from launcher import rundir


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
