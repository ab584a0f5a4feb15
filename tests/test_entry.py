"""The entry's reconciliation of a recipe's trainer arguments with the spec, on real TRL configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import SpecError
from launcher.rank.guard import reconcile
from launcher.render.trainer import render_trainer_overrides
from launcher.rules.validate import validate
from launcher.spec.decided import Resolved
from launcher.spec.launchspec import Batch, Faults, LaunchSpec, Topology, Zero

trl = pytest.importorskip("trl")


def resolved(**batch: int) -> Resolved:
    return validate(LaunchSpec(topology=Topology(procs=2), zero=Zero(stage=1), batch=Batch(**batch)))


def tutorial_config(tmp_path: Path, **overrides: Any) -> Any:
    """What TRL tutorials hard-code."""
    values = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8,
        "bf16": True,
        "use_cpu": True,
        **overrides,
    }
    return trl.SFTConfig(**values)


@pytest.fixture
def as_rank(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Reconcile as a rank of a 2-process run would (configs are built outside it: building them
    with WORLD_SIZE set would start a process group)."""

    def run(args: Any, spec: Resolved, attempt_dir: Path, world: int = 2) -> None:
        with monkeypatch.context() as m:
            m.setenv("WORLD_SIZE", str(world))
            reconcile(args, spec, render_trainer_overrides(spec), attempt_dir)

    return run


def test_recipe_values_are_adopted_without_batch_flags(tmp_path: Path, as_rank: Any) -> None:
    args = tutorial_config(tmp_path)
    as_rank(args, resolved(), tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.bf16) == (1, 8, True)
    assert args.output_dir == str(tmp_path / "out"), "an explicit output_dir is the recipe's to keep"


def test_defaults_are_filled_from_the_spec(tmp_path: Path, as_rank: Any) -> None:
    args = trl.SFTConfig(use_cpu=True)
    as_rank(
        args,
        validate(
            LaunchSpec(
                topology=Topology(procs=2),
                batch=Batch(micro=3, grad_accum=5),
                precision="fp32",
                max_grad_norm=0.3,
            )
        ),
        tmp_path / "attempts" / "1",
    )
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (3, 5)
    assert (args.bf16, args.fp16, args.max_grad_norm) == (False, False, 0.3)
    assert args.output_dir == str(tmp_path / "checkpoints"), "all attempts of a run share its checkpoints"


def test_conflicting_explicit_value_is_refused_naming_both(tmp_path: Path, as_rank: Any) -> None:
    args = tutorial_config(tmp_path)
    with pytest.raises(SpecError) as err:
        as_rank(args, resolved(micro=1, grad_accum=2), tmp_path)
    message = err.value.render()
    assert "gradient_accumulation_steps=8" in message and "--grad-accum" in message
    assert "gradient_accumulation_steps=2" in message


def test_global_batch_alone_uses_the_recipe_micro_batch(tmp_path: Path, as_rank: Any) -> None:
    args = trl.SFTConfig(per_device_train_batch_size=2, use_cpu=True)
    as_rank(args, resolved(global_batch=32), tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 8)


def test_global_batch_that_the_recipe_micro_batch_cannot_reach(tmp_path: Path, as_rank: Any) -> None:
    args = trl.SFTConfig(per_device_train_batch_size=3, use_cpu=True)
    with pytest.raises(SpecError, match=r"--global-batch 32 is not divisible.*per_device_train_batch_size"):
        as_rank(args, resolved(global_batch=32), tmp_path)


def test_world_size_other_than_the_spec_is_refused(tmp_path: Path, as_rank: Any) -> None:
    with pytest.raises(SpecError, match="3 processes but the spec says world size 2"):
        as_rank(trl.SFTConfig(use_cpu=True), resolved(), tmp_path, world=3)


def offloaded() -> Resolved:
    return validate(LaunchSpec(topology=Topology(procs=2), zero=Zero(stage=2, offload_optimizer="cpu")))


def test_offloaded_steps_run_the_fused_optimizer_unless_the_recipe_chose(
    tmp_path: Path, as_rank: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """With offload the optimizer step is on the CPU: the recipe's default becomes torch's fused AdamW
    (fastest measured), its hyperparameters still the trainer's; an explicit choice is the recipe's to
    keep, with its cost said, never refused; without offload nothing changes."""

    def optim(args: Any) -> str:
        return str(getattr(args.optim, "value", args.optim))

    default = trl.SFTConfig(use_cpu=True, learning_rate=3e-4, adam_beta2=0.95, weight_decay=0.1)
    as_rank(default, offloaded(), tmp_path / "attempts" / "1")
    assert optim(default) == "adamw_torch_fused"
    assert (default.learning_rate, default.adam_beta2, default.weight_decay) == (3e-4, 0.95, 0.1)
    explicit = trl.SFTConfig(use_cpu=True, optim="adamw_torch")
    as_rank(explicit, offloaded(), tmp_path / "attempts" / "1")
    assert optim(explicit) == "adamw_torch"
    assert "optim='adamw_torch' is kept" in capsys.readouterr().err
    untouched = trl.SFTConfig(use_cpu=True, optim="adamw_torch")
    as_rank(untouched, resolved(), tmp_path / "attempts" / "1")
    assert optim(untouched) == "adamw_torch"


def test_a_long_hang_timeout_lengthens_the_process_group_timeout_unless_the_recipe_set_one(
    tmp_path: Path, as_rank: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    long_wait = validate(LaunchSpec(topology=Topology(procs=2), faults=Faults(hang_timeout=900)))
    default = trl.SFTConfig(use_cpu=True)
    as_rank(default, long_wait, tmp_path / "attempts" / "1")
    assert default.ddp_timeout == 3900
    explicit = trl.SFTConfig(use_cpu=True, ddp_timeout=600)
    as_rank(explicit, long_wait, tmp_path / "attempts" / "1")
    assert explicit.ddp_timeout == 600
    assert "the recipe's ddp_timeout='600' is kept; a collective may then time out" in capsys.readouterr().err


def resumed_on_one_process(**typed: int) -> Resolved:
    """The tutorial's run (micro 1 x accumulation 8 on 2 processes, global 16) resumed on 1 process,
    decided as ``ftlaunch resume`` decides it."""
    import dataclasses

    from launcher.rules.resume import resume_spec
    from launcher.spec.decided import Resume

    spec = LaunchSpec(topology=Topology(procs=1), zero=Zero(stage=1), batch=Batch(**typed))
    spec, batch, problems = resume_spec(spec, {"world_size": 2, "zero_stage": 1, "micro": 1, "grad_accum": 8})
    assert problems == [] and batch is not None
    resume = Resume("ckpt", 20, saved_global_batch=batch.saved_global, derived=batch.derived)
    return dataclasses.replace(validate(spec), resume=resume)


def test_on_resume_the_derived_batch_replaces_the_recipes_hard_coded_one(
    tmp_path: Path, as_rank: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tutorial_config(tmp_path)
    as_rank(args, resumed_on_one_process(), tmp_path, world=1)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 16)
    assert capsys.readouterr().err == (
        "ftlaunch: the recipe's gradient_accumulation_steps=8 is replaced by 16 for this attempt to keep the "
        "global batch 16 of the run on 1 process\n"
    )


def test_on_resume_a_typed_batch_flag_is_still_held_against_the_recipe(tmp_path: Path, as_rank: Any) -> None:
    """--micro-batch 2 typed on resume: the recipe's micro 1 conflicts (refused); the accumulation
    derived from it (8) replaces the recipe's without a word."""
    args = tutorial_config(tmp_path)
    with pytest.raises(SpecError) as err:
        as_rank(args, resumed_on_one_process(micro=2), tmp_path, world=1)
    (problem,) = err.value.problems
    assert problem.startswith(
        "the recipe sets per_device_train_batch_size=1 but the launch asks for --micro-batch"
    )


def test_a_rank_loads_neither_the_cli_nor_the_validation_rules_nor_sizing() -> None:
    """Every rank imports its entry before the recipe: what it loads costs every rank's start, and a
    rank never decides again (the launch did, in ``decided.json``)."""
    code = "import json, sys, launcher.rank.entry; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "launcher.rank.guard" in loaded and "launcher.spec.decided" in loaded
    banned = ("launcher.cli", "launcher.rules.validate", "launcher.rules.passthrough", "launcher.sizing")
    assert [m for m in loaded if m.startswith(banned)] == []
