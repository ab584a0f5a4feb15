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

from .conftest import TRAIN_ARGS, Launch, ftlaunch

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


@pytest.mark.parametrize("stage", [2])  # every stage trains on 2 processes in test_equivalence.py
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


def test_grpo_zero3_console_metrics_and_plot(e2e_env: dict[str, str], tmp_path: Path) -> None:
    """No batch flags: the recipe's own numbers are adopted and recorded. The console fits on one
    screen, each warning once, while logs/ keeps every rank's full output; rank 0's metrics.jsonl
    has a record per logged step, which status and plot read."""
    steps = 5
    grpo_args = (
        f"--per_device_train_batch_size 2 --num_generations 4 --max_completion_length 8 --max_steps {steps} "
        f"--logging_steps 1 --save_steps {steps} --report_to none"
    )
    launch = ftlaunch("--procs 2 --zero 3", "grpo.py", grpo_args, e2e_env, tmp_path / "runs")
    assert_trained(launch, world=2, global_batch=4, stage=3)

    console = launch.output.splitlines()
    assert len(console) <= 40, launch.output
    warnings = [line for line in console if line.startswith("warning (")]
    assert warnings and len({w.split("): ", 1)[1] for w in warnings}) == len(warnings), warnings
    assert not [line for line in console if line.startswith(("[rank", "Traceback", "  warnings.warn"))]
    log = (launch.attempt_dir / "logs" / "node0.log").read_text()
    for rank in (0, 1):  # each rank's own output, warnings included, many times over
        own = [line for line in log.splitlines() if line.startswith(f"[rank{rank}]:")]
        assert len(own) > 50 and sum("FutureWarning" in line for line in own) > 10
    assert log.count("FutureWarning") > len(warnings) * 5
    assert f"step {steps}/{steps}" in launch.output  # the final progress line

    metrics = [json.loads(line) for line in (launch.attempt_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in logged] == list(range(1, steps + 1))
    for m in logged:
        assert {"learning_rate", "grad_norm", "time"} <= m.keys()
    assert all(m["samples_per_second"] > 0 for m in logged[1:])
    status = subprocess.run(
        [sys.executable, "-m", "launcher", "status", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f" {steps} " in status.splitlines()[-1], status


def test_a_crashing_rank_is_reported_first_and_short(e2e_env: dict[str, str], tmp_path: Path) -> None:
    """ftlaunch's verdict leads, then the rank that failed (not its peer that lost the connection),
    its exception and the recipe's frames, then the log to read; no torchrun traceback."""
    launch = ftlaunch("--procs 2", "../tests/e2e/crasher.py", "", e2e_env, tmp_path / "runs")
    assert launch.code == 1
    console = launch.output.splitlines()
    assert len(console) <= 15, launch.output
    verdict = next(i for i, line in enumerate(console) if line.startswith("ftlaunch: failed"))
    assert (
        console[verdict + 1] == "  rank 1 failed first: ValueError: shard 1 is missing (deliberate failure)"
    )
    assert "load_shard" in launch.output and "every rank's full output" in launch.output
    assert not [line for line in console[:verdict] if "Error" in line or "File " in line], launch.output
    assert "Traceback" not in launch.output and "ChildFailedError" not in launch.output


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
    console = launch.output.splitlines()
    assert len(console) <= 15, launch.output
    message = next(line for line in console if "gradient_accumulation_steps=8" in line)
    assert message.startswith("ftlaunch: the recipe sets")
    assert "Traceback" not in launch.output and launch.output.count("gradient_accumulation_steps=8") == 1
    assert "gradient_accumulation_steps=8" in launch.output and "--grad-accum" in launch.output
    assert launch.json("status.json")["state"] == "refused"
    assert "loading weights" not in launch.output.lower()
    assert not out.exists()
