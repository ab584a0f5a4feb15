"""Equivalence: the same recipe and global batch train the same way on every topology.

Tiny model, fp32, fixed seed, global batch 4, 10 optimizer steps: 1 process x accumulation 4,
2 processes x accumulation 2 and 2 processes x micro 2, each under DDP and ZeRO-1/2/3, SFT full;
LoRA on 2 processes x accumulation 2 under each, and under ZeRO-3 on the other two (``CASES``).
Every per-step loss must match the reference (1 process, plain DDP) within TOLERANCE. The data
(64 samples) is a multiple of every micro x world, so accelerate's even_batches never pads (the one
documented condition under which world sizes differ); LoRA dropout is 0 (dropout draws per rank).
``ftlaunch compare`` is checked on the same runs, and on one with another global batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import compare
from launcher.records import rundir
from launcher.records.runs import list_runs

from .conftest import JOBS, REPO

pytestmark = pytest.mark.e2e

STEPS = 10
TOLERANCE = 1e-5  # relative; measured differences are ~1e-7 (summation order)
TOPOLOGIES = {"1x4": (1, 1, 4), "2x2": (2, 1, 2), "2xmicro2": (2, 2, 1)}  # processes, micro, accumulation
STAGES = (0, 1, 2, 3)
METHODS = {"full": [], "lora": ["--use_peft", "--lora_dropout", "0"]}
REFERENCE = ("1x4", 0)  # 1 process, plain DDP: what every other case is held against
# Full fine-tuning on every topology and stage; LoRA on 2 processes x accumulation 2 at every stage
# and under ZeRO-3 (where its few trainable parameters are partitioned) on the other two topologies:
# the topology's arithmetic is LoRA's as much as full fine-tuning's, so the other 5 would repeat it.
CASES = [("full", t, z) for t in TOPOLOGIES for z in STAGES if (t, z) != REFERENCE]
CASES += [("lora", "2x2", z) for z in STAGES] + [("lora", t, 3) for t in ("1x4", "2xmicro2")]
RECIPE_ARGS = [
    *f"--max_steps {STEPS} --logging_steps 1 --report_to none --learning_rate 1e-3".split(),
    *["--seed", "7", "--lr_scheduler_type", "constant"],
]


def launch(
    runs: Path, method: str, topology: str, stage: int, global_batch: int | None = None, *flags: str
) -> Path:
    procs, micro, accumulation = TOPOLOGIES[topology]
    batch = ["--global-batch", str(global_batch)] if global_batch else ["--grad-accum", str(accumulation)]
    suffix = f"-global{global_batch}" if global_batch else ""
    name = f"{method}-{topology}-zero{stage}{suffix}" + "".join("-" + f.strip("-") for f in flags)
    argv = [
        *f"--runs-dir {runs} --name {name} --procs {procs} --zero {stage} --precision fp32".split(),
        *flags,
        *["--micro-batch", str(micro), *batch, str(JOBS / "sft.py"), *RECIPE_ARGS, *METHODS[method]],
    ]
    done = subprocess.run(
        [sys.executable, "-m", "launcher", *argv], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return list_runs(runs)[-1].path


def losses(run: Path) -> dict[int, float]:
    attempt = rundir.latest_attempt(run)
    assert attempt is not None
    records = [json.loads(line) for line in (attempt / rundir.METRICS).read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


class Runs(dict[tuple[str, str, int], Path]):
    """Every configuration launched at most once per session, on first use."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, key: tuple[str, str, int]) -> Path:
        self[key] = launch(self.root, *key)
        return self[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("equivalence"))


@pytest.mark.parametrize(("method", "topology", "stage"), CASES)
def test_every_topology_and_stage_trains_like_one_process(
    runs: Runs, method: str, topology: str, stage: int
) -> None:
    reference = losses(runs[(method, *REFERENCE)])
    mine = losses(runs[(method, topology, stage)])
    assert sorted(mine) == sorted(reference) == list(range(1, STEPS + 1))
    assert len({round(v, 4) for v in reference.values()}) > 3, (
        "the loss must move for the test to mean anything"
    )
    procs, micro, accumulation = TOPOLOGIES[topology]
    effective = json.loads(
        (rundir.latest_attempt(runs[(method, topology, stage)]) / rundir.EFFECTIVE).read_text()
    )
    assert (effective["world_size"], effective["zero_stage"]) == (procs, stage)
    assert (effective["micro_batch_size"], effective["grad_accum"], effective["global_batch_size"]) == (
        micro,
        accumulation,
        4,
    )
    worst = max(compare.relative(reference[s], mine[s]) for s in reference)
    print(f"{method} {topology} zero{stage}: max relative loss difference {worst:.2e}")  # shown with -rP
    assert worst <= TOLERANCE, {s: (reference[s], mine[s]) for s in reference}


def test_compare_flags_another_global_batch_and_passes_equal_runs(runs: Runs) -> None:
    same = [runs[("lora", "1x4", 0)], runs[("lora", "2x2", 3)], runs[("lora", "2xmicro2", 3)]]
    other = launch(runs.root, "lora", "2x2", 2, global_batch=8)
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "compare", *map(str, [*same, other])],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {r.run: r for r in compare.compare([*same, other])}
    for run in same[1:]:
        row = rows[run.name]
        assert row.verdict == "same" and row.difference is not None and row.difference <= TOLERANCE
    flagged = rows[other.name]
    assert flagged.verdict == "DIFFERENT" and flagged.difference is not None and flagged.difference > 1e-3
    assert flagged.topology.global_batch == 8
    lines = done.stdout.splitlines()
    assert any(other.name in line and "DIFFERENT" in line for line in lines)
    assert any(line.startswith(f"note: {other.name} has global batch 8") for line in lines)


def test_an_offloaded_optimizer_trains_the_same(runs: Runs) -> None:
    """With --offload-optimizer cpu the step runs on the CPU, in torch's fused AdamW (ftlaunch's
    choice, the fastest measured there): still the same training."""
    reference = losses(runs[("full", "1x4", 0)])
    run = launch(runs.root, "full", "2x2", 2, None, "--offload-optimizer", "cpu")
    effective = json.loads((rundir.latest_attempt(run) / rundir.EFFECTIVE).read_text())  # type: ignore[operator]
    assert (effective["offload_optimizer"], effective["optim"]) == ("cpu", "adamw_torch_fused")
    mine = losses(run)
    worst = max(compare.relative(reference[s], mine[s]) for s in reference)
    print(f"full 2x2 zero2 + optimizer offload: max relative loss difference {worst:.2e}")
    assert sorted(mine) == sorted(reference) and worst <= TOLERANCE
