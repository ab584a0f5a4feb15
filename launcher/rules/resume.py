"""Resume rules: what may change between a checkpoint and the attempt that continues it (world size,
ZeRO stage within a layout), and how the run's global batch is split over a new world size or
changed on purpose. Pure: the run folder is read by ``records/resume.py``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath

from launcher.rules.batch import product, resolve_batch
from launcher.spec.decided import BatchPlan
from launcher.spec.launchspec import Batch, LaunchSpec, merge
from launcher.spec.recipeargs import recipe_flag_value


def same_training_problems(recorded: LaunchSpec, spec: LaunchSpec) -> list[str]:
    """A checkpoint continues only the recipe and model that wrote it."""
    problems = []
    if PurePath(recorded.recipe or "").name != PurePath(spec.recipe or "").name:
        problems.append(
            f"the run was trained by {recorded.recipe}, not {spec.recipe}; resume it with its own recipe "
            "or start a new run under another --name"
        )
    before = recipe_flag_value(recorded.args, "--model_name_or_path")
    now = recipe_flag_value(spec.args, "--model_name_or_path")
    if before != now:
        problems.append(
            f"the run's checkpoints are of --model_name_or_path {before or '(the recipe default)'}, not "
            f"{now or '(the recipe default)'}; resume with the same model or start a new run"
        )
    return problems


def stages_compatible(saved: int, wanted: int) -> bool:
    """ZeRO-1 and ZeRO-2 write the same checkpoint layout; DDP (a full ``optimizer.pt``) and ZeRO-3
    (partitioned parameters) each load only their own."""
    return saved == wanted or {saved, wanted} <= {1, 2}


def resume_spec(
    spec: LaunchSpec, saved: Mapping[str, int | None]
) -> tuple[LaunchSpec, ResumeBatch | None, list[str]]:
    """The spec of a resumed attempt: its stage loads the checkpoint, and its batch is the run's
    (``resume_batch``). ``spec.batch`` holds only the batch flags typed for this attempt; the
    checkpoint's batch is ``None`` when its marker did not record one (the typed flags then apply
    as in a fresh launch)."""
    problems = []
    stage = saved.get("zero_stage")
    if spec.zero.stage == "auto" and stage is not None:  # a checkpoint loads under its own stage only
        spec = merge(spec, {"zero.stage": stage})
    if (
        stage is not None
        and isinstance(spec.zero.stage, int)
        and not stages_compatible(stage, spec.zero.stage)
    ):
        can = "--zero 1 or --zero 2" if stage in (1, 2) else f"--zero {stage}"
        problems.append(
            f"--zero {spec.zero.stage}: the checkpoint was saved under "
            f"{'plain DDP' if stage == 0 else f'ZeRO-{stage}'} and cannot be loaded there; resume with {can}"
        )
    micro, accum, world = saved.get("micro"), saved.get("grad_accum"), saved.get("world_size")
    if micro is None or accum is None or world is None:
        return spec, None, problems
    chosen, batch_problems = resume_batch(
        spec.batch, BatchPlan(micro, accum, product(micro, accum, world), world), spec.topology.world_size
    )
    if chosen is None:
        return spec, None, problems + batch_problems
    decided = {"batch.micro": chosen.micro, "batch.grad_accum": chosen.grad_accum, "batch.global_batch": None}
    return merge(spec, decided), chosen, problems


@dataclass(frozen=True)
class ResumeBatch:
    """The batch of a resumed attempt. ``derived`` names the values the launch chose to keep the
    run's global batch: on every rank they replace the recipe's own, hard-coded or not (a recipe
    that fixes ``gradient_accumulation_steps=8`` must still resume on half the processes). The
    values typed for this attempt are held against the recipe as in a fresh launch."""

    micro: int
    grad_accum: int
    derived: tuple[str, ...]
    saved_global: int  # the run's global batch so far


def resume_batch(typed: Batch, saved: BatchPlan, world: int) -> tuple[ResumeBatch | None, list[str]]:
    """Micro x accumulation on the new world size.

    Trainer skips ``global_step x accumulation`` local batches on resume, which lands on the right
    sample only if micro x accumulation x world is unchanged (resume-facts: otherwise it silently
    re-trains samples it has seen). So with no batch flag typed the global batch is kept: per
    process ``global / world``, split into the largest micro batch that divides it and is no larger
    than the saved one (memory), the rest accumulated. Typed flags are a deliberate choice: a typed
    split of the same global batch is as good, and a typed global batch changes the training
    (``batch_change``); they are taken, or refused, never dropped."""
    assert saved.global_batch is not None and saved.micro is not None
    if world < 1 or any(v is not None and v < 1 for v in (typed.micro, typed.grad_accum, typed.global_batch)):
        return None, []  # reported by the topology and scalar rules (``validate``)
    if typed.micro is not None and typed.grad_accum is not None:
        plan, problems = resolve_batch(typed.micro, typed.grad_accum, typed.global_batch, world)
        return _typed_batch(plan, (), saved, problems)
    target = typed.global_batch if typed.global_batch is not None else saved.global_batch
    if target % world:
        return None, [_indivisible(target, world, typed.global_batch is not None, saved)]
    per_rank = target // world
    if typed.micro is not None or typed.grad_accum is not None:
        return _one_typed(typed, per_rank, world, saved)
    micro = max(m for m in range(1, min(saved.micro, per_rank) + 1) if per_rank % m == 0)
    return ResumeBatch(micro, per_rank // micro, ("micro", "grad_accum"), saved.global_batch), []


def _typed_batch(
    plan: BatchPlan, derived: tuple[str, ...], saved: BatchPlan, problems: list[str]
) -> tuple[ResumeBatch | None, list[str]]:
    if problems or plan.micro is None or plan.grad_accum is None:
        return None, problems
    assert saved.global_batch is not None
    return ResumeBatch(plan.micro, plan.grad_accum, derived, saved.global_batch), []


def _one_typed(
    typed: Batch, per_rank: int, world: int, saved: BatchPlan
) -> tuple[ResumeBatch | None, list[str]]:
    """``--micro-batch`` or ``--grad-accum`` alone: the other one fills the global batch."""
    given, flag, other = (
        (typed.micro, "--micro-batch", "grad_accum")
        if typed.micro is not None
        else (typed.grad_accum, "--grad-accum", "micro")
    )
    assert given is not None
    if per_rank % given:
        fits = ", ".join(str(d) for d in divisors(per_rank))
        kept = "the run's" if typed.global_batch is None else "the requested"
        return None, [
            f"{flag} {given}: {kept} global batch {per_rank * world} on world size {world} is {per_rank} "
            f"samples per process, not divisible by {given}; give a {flag} dividing {per_rank} ({fits}), or "
            "change the global batch with --global-batch"
        ]
    rest = per_rank // given
    micro, accum = (given, rest) if other == "grad_accum" else (rest, given)
    plan = BatchPlan(micro, accum, per_rank * world, world)
    return _typed_batch(plan, (other,), saved, [])


def _indivisible(target: int, world: int, typed: bool, saved: BatchPlan) -> str:
    whose = (
        f"--global-batch {target}"
        if typed
        else f"the run's global batch {target} (micro {saved.micro} x accumulation {saved.grad_accum} x "
        f"world {saved.world_size})"
    )
    near = [d for d in divisors(target) if d != world]
    below = [d for d in near if d < world][-1:]
    above = [d for d in near if d > world][:1]
    return (
        f"world size {world}: {whose} cannot be split evenly over {world} processes; resume on a world size "
        f"dividing {target}, e.g. {' or '.join(map(str, below + above))}"
    )


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def batch_change(resolved_batch: BatchPlan, saved_global: int | None, step: int) -> str | None:
    """The warning for a resume whose typed batch flags change the run's global batch, or None."""
    new = resolved_batch.global_batch
    if saved_global is None or new is None or new == saved_global:
        return None
    lost = "skipped" if new > saved_global else "re-trained"
    return (
        f"the global batch changes from {saved_global} to {new} at step {step}: from here on this run no "
        f"longer trains as it did, and the trainer's data position ({step} steps x {new} samples) is not "
        f"the {step * saved_global} samples seen so far, so samples are {lost}; resume without batch "
        "flags to keep the run's training"
    )
