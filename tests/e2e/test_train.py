"""Real training launches: accelerate + DeepSpeed on 2 CPU processes, TRL recipes, tiny local model.

Each run must show, from inside the run: the world size the process group really had, the global
batch the trainer really used, a logged loss and a written checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import JOBS, REPO, TRAIN_ARGS, Launch, ftlaunch

pytestmark = pytest.mark.e2e


def assert_trained(launch: Launch, world: int, global_batch: int, stage: int) -> None:
    tail = launch.output[-3000:]
    assert launch.code == 0, tail
    assert launch.run_dir is not None
    done = sorted((launch.attempt_dir / "done").glob("rank*.json"))
    assert len(done) == world, tail
    assert {json.loads(p.read_text())["world_size"] for p in done} == {world}
    effective = launch.json("effective.json")
    assert effective["world_size"] == world and effective["global_batch_size"] == global_batch
    assert effective["zero_stage"] == stage
    checkpoints = sorted(Path(effective["output_dir"]).glob("checkpoint-*"))
    assert checkpoints, f"no checkpoint in {effective['output_dir']}"
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert any("loss" in entry for entry in state["log_history"]), state["log_history"]
    assert launch.json("status.json")["state"] == "finished"


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_sft_lora_two_processes(stage: int, e2e_env: dict[str, str], tmp_path: Path) -> None:
    launch = ftlaunch(
        f"--procs 2 --zero {stage} --micro-batch 2 --grad-accum 2",
        "sft.py",
        f"--use_peft --assistant_only_loss {TRAIN_ARGS}",
        e2e_env,
        tmp_path / "runs",
    )
    assert_trained(launch, world=2, global_batch=8, stage=stage)
    if stage:
        ds = launch.json("ds_config.json")
        assert (ds["train_batch_size"], ds["gradient_accumulation_steps"]) == (8, 2)


def test_dpo_zero2(e2e_env: dict[str, str], tmp_path: Path) -> None:
    launch = ftlaunch(
        "--procs 2 --zero 2 --global-batch 8 --micro-batch 2",
        "dpo.py",
        f"--use_peft {TRAIN_ARGS}",
        e2e_env,
        tmp_path / "runs",
    )
    assert_trained(launch, world=2, global_batch=8, stage=2)


def test_grpo_zero3_recipe_batch_adopted(e2e_env: dict[str, str], tmp_path: Path) -> None:
    """No batch flags: the recipe's own numbers are adopted and recorded."""
    grpo_args = f"--per_device_train_batch_size 2 --num_generations 4 --max_completion_length 8 {TRAIN_ARGS}"
    launch = ftlaunch("--procs 2 --zero 3", "grpo.py", grpo_args, e2e_env, tmp_path / "runs")
    assert_trained(launch, world=2, global_batch=4, stage=3)


def test_qlora_single_process(e2e_env: dict[str, str], tmp_path: Path) -> None:
    launch = ftlaunch(
        "--procs 1 --micro-batch 2",
        "sft.py",
        f"--use_peft --load_in_4bit {TRAIN_ARGS}",
        e2e_env,
        tmp_path / "runs",
    )
    assert_trained(launch, world=1, global_batch=2, stage=0)


def test_tutorial_script_runs_unmodified(e2e_env: dict[str, str], tmp_path: Path) -> None:
    """Hard-coded SFTConfig(per_device_train_batch_size=1, gradient_accumulation_steps=8, bf16=True)."""
    out = tmp_path / "tutorial_out"
    launch = ftlaunch("--procs 2 --zero 1", "tutorial_sft.py", str(out), e2e_env, tmp_path / "runs")
    assert_trained(launch, world=2, global_batch=16, stage=1)
    assert launch.json("effective.json")["output_dir"] == str(out)


def test_conflicting_flag_fails_before_model_load(e2e_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    flags = "--procs 2 --zero 1 --grad-accum 2"
    launch = ftlaunch(flags, "tutorial_sft.py", str(out), e2e_env, tmp_path / "runs")
    assert launch.code == 2, launch.output[-3000:]
    assert "gradient_accumulation_steps=8" in launch.output and "--grad-accum" in launch.output
    assert launch.json("status.json")["state"] == "refused"
    assert "loading weights" not in launch.output.lower()
    assert not out.exists()


def test_committed_preset_works_with_plain_accelerate(e2e_env: dict[str, str], tmp_path: Path) -> None:
    """The presets are for users who launch by hand: `accelerate launch` with the ZeRO-2 preset
    (every trainer-owned number "auto") trains a recipe on 2 processes, no ftlaunch involved."""
    out = tmp_path / "out"
    launch = "--config_file accelerate_configs/zero2.yaml --num_processes 2 --main_process_port 0"
    recipe_args = f"--use_peft --output_dir {out} --per_device_train_batch_size 2 {TRAIN_ARGS}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *launch.split(),
            str(JOBS / "sft.py"),
            *recipe_args.split(),
        ],
        env=e2e_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (checkpoint,) = sorted(out.glob("checkpoint-*"))
    assert (checkpoint / "global_step2").is_dir(), "a DeepSpeed checkpoint was expected"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["train_batch_size"] == 2 and any("loss" in e for e in state["log_history"])
