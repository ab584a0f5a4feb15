"""Resume on another world size with a recipe that hard-codes its batch (``SFTConfig(
per_device_train_batch_size=..., gradient_accumulation_steps=...)``): the run's checkpoint decides
the batch of the new attempt, the derived values replace the recipe's on every rank, and training
continues exactly as the uninterrupted run (fp32, 1e-5 as test_resume_world). Scaling down doubles
the accumulation; scaling up halves the micro batch when there is no accumulation to divide."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.records import rundir
from launcher.records.runs import list_runs

from .conftest import REPO
from .test_resume import losses, run_to_end

pytestmark = pytest.mark.e2e

STEPS, SAVE_EVERY = 16, 4
RECIPE = REPO / "tests" / "recipes" / "fixed_batch_sft.py"


def resume_argv(run: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "launcher", "resume", "--runs-dir", str(run.parent), run.name, *flags]


@pytest.mark.parametrize(
    ("micro", "accum", "saved_on", "resumed_on", "replaced"),
    [
        (1, 4, 2, 1, "gradient_accumulation_steps=4 is replaced by 8"),
        (4, 1, 1, 2, "per_device_train_batch_size=4 is replaced by 2"),
    ],
    ids=["hard-coded-accum-2to1", "hard-coded-micro-1to2"],
)
def test_a_recipe_with_a_hard_coded_batch_resumes_on_another_world_size(
    micro: int,
    accum: int,
    saved_on: int,
    resumed_on: int,
    replaced: str,
    e2e_env: dict[str, str],
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    flags = f"--runs-dir {runs} --procs {saved_on} --zero 2 --precision fp32 --save-steps {SAVE_EVERY}"
    recipe = [str(RECIPE), str(micro), str(accum), str(STEPS)]
    run_to_end([sys.executable, "-m", "launcher", *flags.split(), *recipe], e2e_env)
    run = list_runs(runs)[-1].path
    reference = losses(rundir.attempt_path(run, 1))  # world sizes agree within ~2e-7 (test_equivalence)
    for later in (run / rundir.CHECKPOINTS).glob("checkpoint-*"):
        if int(later.name.split("-")[1]) > 2 * SAVE_EVERY:
            shutil.rmtree(later)  # as if stopped after step 8

    done = run_to_end(resume_argv(run, "--procs", str(resumed_on)), e2e_env)
    console = done.stdout + done.stderr
    assert replaced in console and f"global batch {micro * accum * saved_on} of the run" in console

    second = rundir.attempt_path(run, 2)
    effective = rundir.read_json(second / rundir.EFFECTIVE)
    assert (effective["world_size"], effective["global_batch_size"]) == (resumed_on, micro * accum * saved_on)
    resumed = losses(second)
    assert sorted(resumed) == list(range(2 * SAVE_EVERY + 1, STEPS + 1))
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], rel=1e-5), f"step {step}"

    # Batch flags on resume are taken or refused, never dropped (here before anything is launched).
    def dry(*flags: str) -> subprocess.CompletedProcess[str]:
        argv = resume_argv(run, "--procs", str(resumed_on), "--dry-run", *flags)
        return subprocess.run(argv, cwd=REPO, env=e2e_env, capture_output=True, text=True, timeout=120)

    refused = dry("--micro-batch", "3")
    assert refused.returncode == 2 and "--micro-batch 3: the run's global batch" in refused.stderr
    assert "Traceback" not in refused.stderr
    changed = dry("--global-batch", str(2 * micro * accum * saved_on))
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert "warning: the global batch changes from" in changed.stderr
