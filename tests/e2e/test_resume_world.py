"""Resume on a different world size: the global batch is kept (accumulation rescaled), DeepSpeed's
checkpoint is converted to a universal one and loaded for that attempt only, and every resumed step
matches the uninterrupted run (full fine-tunes, so DeepSpeed's ZeRO-3 step-counter bug would show;
and LoRA)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from launcher.records import rundir
from launcher.records.runs import list_runs

from .conftest import JOBS
from .test_resume import losses, run_to_end

pytestmark = pytest.mark.e2e

STEPS, SAVE_EVERY, GLOBAL, MICRO = 24, 4, 8, 2
TRAIN = f"--max_steps {STEPS} --logging_steps 1 --report_to none --learning_rate 1e-3"


def command(runs: Path, procs: int, stage: int, lora: bool) -> list[str]:
    accum = GLOBAL // (MICRO * procs)
    flags = f"--runs-dir {runs} --procs {procs} --zero {stage} --micro-batch {MICRO} --grad-accum {accum}"
    flags += f" --precision fp32 --save-steps {SAVE_EVERY}"
    # No LoRA dropout: its masks come from per-rank RNG streams, which differ between world sizes.
    lora_args = ["--use_peft", "--lora_dropout", "0"] if lora else []
    recipe = [str(JOBS / "sft.py"), *TRAIN.split(), *lora_args]
    return [sys.executable, "-m", "launcher", *flags.split(), *recipe]


@pytest.mark.parametrize(
    ("stage", "lora", "saved_on", "resumed_on"),
    # ZeRO-2 full 2 -> 1 is covered by ZeRO-2 LoRA 2 -> 1 (the same conversion) and ZeRO-3 full 2 -> 1.
    [(3, False, 2, 1), (3, False, 1, 2), (2, True, 2, 1)],
    ids=["zero3-full-2to1", "zero3-full-1to2", "zero2-lora-2to1"],
)
def test_resume_on_another_world_size_keeps_the_global_batch_and_the_losses(
    stage: int, lora: bool, saved_on: int, resumed_on: int, e2e_env: dict[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    run_to_end(command(runs, saved_on, stage, lora), e2e_env)
    run = list_runs(runs)[-1].path
    # The uninterrupted curve: this run went on to the end. At the same global batch another world
    # size trains the same within ~2e-7 (test_equivalence.py), so it is the reference at either size.
    reference = losses(rundir.attempt_path(run, 1))
    # As if the job had been stopped after step 2 x SAVE_EVERY: later checkpoints never happened.
    for later in (run / rundir.CHECKPOINTS).glob("checkpoint-*"):
        if int(later.name.split("-")[1]) > 2 * SAVE_EVERY:
            shutil.rmtree(later)
    argv = [
        sys.executable,
        "-m",
        "launcher",
        "resume",
        "--runs-dir",
        str(runs),
        run.name,
        "--procs",
        str(resumed_on),
    ]
    done = run_to_end(argv, e2e_env)
    assert "universal checkpoint, world size changed" in done.stderr

    second = rundir.attempt_path(run, 2)
    effective = rundir.read_json(second / rundir.EFFECTIVE)
    assert (effective["world_size"], effective["global_batch_size"]) == (resumed_on, GLOBAL)
    decided = rundir.read_json(second / "decided.json")
    assert decided["resume"]["saved_world_size"] == saved_on and decided["resume"]["universal"] is True
    assert rundir.read_json(second / "ds_config.json")["checkpoint"] == {"load_universal": True}
    assert "checkpoint" not in rundir.read_json(rundir.attempt_path(run, 1) / "ds_config.json")

    resumed = losses(second)
    first = min(resumed)
    assert first == 2 * SAVE_EVERY + 1 and sorted(resumed) == list(range(first, STEPS + 1))
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], rel=1e-5), f"step {step}"
