"""The guard around the recipe's trainer arguments: the launch's decided values (batch, precision,
clipping, ZeRO) fill the recipe's defaults, a value the recipe set that disagrees with one the user
typed is refused naming both, values a resume derived replace the recipe's, and the numbers the
trainer really uses are recorded (``effective.json``)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from launcher.errors import SpecError
from launcher.rank.recorder import rank, say_phase
from launcher.records import rundir
from launcher.render.trainer import PREFERRED
from launcher.rules.batch import product, resolve_batch
from launcher.spec.decided import BatchPlan, Resolved

# Trainer argument -> the launch flag that decides it, for error messages.
FLAG_OF = {
    "per_device_train_batch_size": "--micro-batch",
    "gradient_accumulation_steps": "--grad-accum",
    "bf16": "--precision",
    "fp16": "--precision",
    "max_grad_norm": "--max-grad-norm",
    "save_strategy": "--save-steps",
    "save_steps": "--save-steps",
    "use_cpu": "--procs",
}


# Where the recipe's own value never conflicts: the launch's value is simply required.
ALWAYS_FILL = {"use_cpu", "save_strategy"}


DEFAULT_OUTPUT_DIRS = (None, "trainer_output")


# ---------------------------------------------------------------- the guard


def install_guard(resolved: Resolved, overrides: dict[str, Any], attempt_dir: Path) -> None:
    from transformers import TrainingArguments

    original = TrainingArguments.__post_init__

    def guarded_post_init(self: Any) -> None:
        reconcile(self, resolved, overrides, attempt_dir)
        original(self)  # type: ignore[no-untyped-call]
        record_effective(self, resolved, attempt_dir)
        say_phase(attempt_dir, "loading the model and data")

    TrainingArguments.__post_init__ = guarded_post_init  # type: ignore[method-assign]


def reconcile(args: Any, resolved: Resolved, overrides: dict[str, Any], attempt_dir: Path) -> None:
    """Fill the spec's values into ``args`` or refuse conflicting ones; all conflicts in one error."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != resolved.world_size:
        raise SpecError(
            [
                f"this run has {world} processes but the spec says world size "
                f"{resolved.world_size}; launch it with ftlaunch, not by hand"
            ]
        )
    defaults = field_defaults(type(args))
    wanted = dict(overrides)
    flags = dict(FLAG_OF)
    derived = accumulation_for_global_batch(args, resolved)
    if derived is not None:
        wanted["gradient_accumulation_steps"] = derived
        flags["gradient_accumulation_steps"] = f"--global-batch {resolved.batch.global_batch}"
    if resolved.spec.checkpointing.save_every is not None and own_save_schedule(args, defaults):
        wanted.pop("save_strategy", None)  # kept, and said
    conflicts = []
    replaced = derived_on_resume(resolved)
    for key, want in wanted.items():
        have = getattr(args, key)
        if have == want or key in ALWAYS_FILL or is_default(key, have, args, defaults):
            setattr(args, key, want)
            continue
        if key in replaced:
            announce_replaced(key, have, want, resolved)
            setattr(args, key, want)
            continue
        if key in PREFERRED:
            keep_recipes_choice(key, have, want)
            continue
        conflicts.append(
            f"the recipe sets {key}={have!r} but the launch asks for {flags[key]} "
            f"({key}={want!r}); drop {flags[key].split()[0]} to keep the recipe's value, or remove "
            f"{key} from the recipe to let the launch decide"
        )
    if conflicts:
        raise SpecError(conflicts)
    if getattr(args, "output_dir", None) in DEFAULT_OUTPUT_DIRS:
        args.output_dir = str(rundir.checkpoints_of(attempt_dir))
    if resolved.resume is None:
        refuse_used_output_dir(Path(args.output_dir), attempt_dir)


# The spec's batch fields under the trainer's names (``render.trainer`` writes them so).
TRAINER_KEY_OF = {"micro": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps"}


def derived_on_resume(resolved: Resolved) -> set[str]:
    """Trainer arguments the launch chose to keep a resumed run's global batch: they replace the
    recipe's own values, hard-coded or not (typed flags are held against the recipe instead)."""
    return {TRAINER_KEY_OF[name] for name in resolved.resume.derived} if resolved.resume else set()


def announce_replaced(key: str, have: Any, want: Any, resolved: Resolved) -> None:
    if rank() == 0:
        world = resolved.world_size
        print(
            f"ftlaunch: the recipe's {key}={have!r} is replaced by {want!r} for this attempt to keep the "
            f"global batch {resolved.batch.global_batch} of the run on {world} process{'es' * (world > 1)}",
            file=sys.stderr,
            flush=True,
        )


def own_save_schedule(args: Any, defaults: dict[str, Any]) -> bool:
    """The recipe chose when to save (``save_steps``/``save_strategy``): that choice is kept over
    ``--save-every``, and rank 0 says so."""
    chosen = [
        f"{key}={getattr(getattr(args, key), 'value', getattr(args, key))!r}"
        for key in ("save_strategy", "save_steps")
        if not is_default(key, getattr(args, key), args, defaults)
    ]
    if chosen and rank() == 0:
        print(
            f"ftlaunch: the recipe sets {', '.join(chosen)}: that schedule is kept and --save-every is "
            "not applied; drop it from the recipe to let ftlaunch choose",
            file=sys.stderr,
            flush=True,
        )
    return bool(chosen)


def keep_recipes_choice(key: str, have: Any, want: Any) -> None:
    """ftlaunch's preference gives way to the recipe's explicit choice; rank 0 says what it costs."""
    cost = {
        "optim": f"with optimizer offload the step runs on the CPU, where {want!r} measured about 3x "
        "faster than torch's for-loop AdamW (bench/offload_step.py); drop it from the recipe to get "
        "the faster one",
        "ddp_timeout": f"a collective may then time out before ftlaunch's hang watchdog acts (it keeps "
        f"every rank's stack); drop it from the recipe to get {want!r} s from --hang-timeout",
    }
    if rank() == 0:
        print(
            f"ftlaunch: the recipe's {key}={str(getattr(have, 'value', have))!r} is kept; {cost[key]}",
            file=sys.stderr,
            flush=True,
        )


def refuse_used_output_dir(output_dir: Path, attempt_dir: Path) -> None:
    """A fresh start must not train over (and later rotate away) another run's checkpoints."""
    from launcher.records import checkpoints

    found = [c.path for c in checkpoints.scan(output_dir) if c.complete] if output_dir.is_dir() else []
    if found:
        run = attempt_dir.parent.parent
        raise SpecError(
            [
                f"output_dir {output_dir} already holds {len(found)} checkpoint(s) ({found[-1].name}, ...); "
                f"continue that run with: ftlaunch resume RUN, or launch with --resume auto --name NAME; "
                f"or give the recipe another --output_dir (this run's record: {run})"
            ]
        )


def accumulation_for_global_batch(args: Any, resolved: Resolved) -> int | None:
    """With only ``--global-batch`` given, the recipe's micro batch fixes the accumulation."""
    batch = resolved.batch
    if batch.global_batch is None or batch.micro is not None or batch.grad_accum is not None:
        return None
    micro = int(args.per_device_train_batch_size)
    plan, problems = resolve_batch(micro, None, batch.global_batch, resolved.world_size)
    if problems:
        raise SpecError(
            [f"{p} (micro batch {micro} is the recipe's per_device_train_batch_size)" for p in problems]
        )
    return plan.grad_accum


def field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def is_default(key: str, value: Any, args: Any, defaults: dict[str, Any]) -> bool:
    """Did the recipe leave ``key`` alone? TRL resolves ``bf16=None`` to ``not fp16`` before we see
    it, so that resolved value also counts as the default (an explicit ``bf16=True`` in a TRL
    recipe is indistinguishable from it)."""
    default = defaults.get(key, dataclasses.MISSING)
    if value == default:
        return True
    if key == "bf16" and default is None:
        return bool(value) == (not args.fp16)
    return False


def record_effective(args: Any, resolved: Resolved, attempt_dir: Path) -> None:
    """Log the numbers the trainer will really use; rank 0 records them in the run folder."""
    world = int(args.world_size)
    micro, accum = int(args.per_device_train_batch_size), int(args.gradient_accumulation_steps)
    precision = "bf16" if args.bf16 else ("fp16" if args.fp16 else "fp32")
    stage = resolved.spec.zero.stage
    optim = str(getattr(args.optim, "value", args.optim))
    offload = resolved.spec.zero.offload_optimizer
    batch = BatchPlan(micro, accum, product(micro, accum, world), world)
    summary = (
        f"{batch.describe()}, {precision}, {'ZeRO-' + str(stage) if stage else 'DDP'}"
        f"{f', optimizer offload to {offload} ({optim})' if offload != 'none' else ''}"
    )
    if rank() != 0:
        return
    print(f"ftlaunch: effective {summary}", file=sys.stderr, flush=True)
    rundir.write_json(
        attempt_dir / rundir.EFFECTIVE,
        {
            "micro_batch_size": micro,
            "grad_accum": accum,
            "world_size": world,
            "global_batch_size": batch.global_batch,
            "precision": precision,
            "zero_stage": stage,
            "max_grad_norm": args.max_grad_norm,
            "optim": optim,
            "offload_optimizer": offload,
            "output_dir": args.output_dir,
            "summary": summary,
        },
    )
