"""What each rank does about checkpoints: completion markers, save on signal, and resuming.

The trainer writes ``checkpoint-N`` in place, so a folder can be half-written when a node dies.
After every rank has finished saving (a barrier in ``on_save``), rank 0 writes a completion marker
last; only marked checkpoints are ever resumed from (``records/checkpoints.py``). Retention is ours
for the same reason: the trainer's own rotation could delete the last complete checkpoint before
the new one is marked.

On the pre-emption signal every rank sets a flag; the flags are all-reduced (MAX) at every step's
end, so all ranks agree to save at the same step boundary and stop. Acting on a local flag alone
deadlocks or crashes DeepSpeed (resume-facts: ZeRO-2 hung, ZeRO-3 crashed in gloo).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from launcher.protocol import DEADLINE_ENV, PREEMPTION_SIGNAL
from launcher.rank.saves import Saves
from launcher.records import rundir
from launcher.rules.batch import product
from launcher.rules.interval import policy_of
from launcher.spec.decided import Resolved


def install(resolved: Resolved, attempt_dir: Path) -> None:
    """Add the checkpoint callback to every trainer the recipe builds, and pin the resume point."""
    import transformers.trainer

    callbacks: list[Any] = transformers.trainer.DEFAULT_CALLBACKS
    callbacks.append(checkpoint_callback(resolved, attempt_dir))
    if resolved.resume is not None:
        pin_resume(resolved.resume.checkpoint)


def checkpoint_callback(resolved: Resolved, attempt_dir: Path) -> type:
    from transformers import TrainerCallback

    flag = {"raised": False}

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        flag["raised"] = True

    signal.signal(PREEMPTION_SIGNAL, on_signal)

    universal = resolved.resume is not None and resolved.resume.universal
    clock = Clock(deadline())
    saves = Saves(policy_of(resolved.spec), attempt_dir)

    class Checkpoints(TrainerCallback):
        def on_train_begin(
            self, args: Any, state: Any, control: Any, optimizer: Any = None, **kw: Any
        ) -> None:
            if universal:
                separate_step_counters(optimizer)
            saves.begin(args, state)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            late = clock.step_ended()
            saves.step_ended()
            stop, due = agreed([flag["raised"] or late is not None, saves.due()], args)
            control.should_save = control.should_save or due
            if stop:
                control.should_save = True
                control.should_training_stop = True
                if state.is_world_process_zero:  # the reason may be another rank's
                    say_stop(
                        "pre-empted" if flag["raised"] else clock.describe(), state.global_step, attempt_dir
                    )
            if control.should_save:
                clock.save_started()
                saves.save_started()

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.save_ended()
            barrier()
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                mark(folder, resolved, args, state, attempt_dir)
            barrier()
            saves.save_ended(state.global_step, state.is_world_process_zero)

    return Checkpoints


def say_stop(why: str, step: int, attempt_dir: Path) -> None:
    rundir.write_json(attempt_dir / rundir.PREEMPTED, {"step": step, "reason": why})
    print(f"ftlaunch: {why}; saving at step {step} and stopping", file=sys.stderr)


MARGIN_SECONDS = 10.0


FIRST_SAVE_GUESS = 10.0  # before a save has been timed


def deadline() -> float | None:
    value = os.environ.get(DEADLINE_ENV)
    return float(value) if value else None


class Clock:
    """Times steps and saves, to stop and save while one more step and a save still fit before the
    deadline (the SLURM time limit): a run never ends at the limit with its last steps unsaved."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.last = time.monotonic()
        self.step_seconds = 0.0
        self.save_seconds: float | None = None
        self.saving_since: float | None = None

    def step_ended(self) -> str | None:
        """None while there is time; otherwise why the run must save and stop now."""
        now = time.monotonic()
        self.step_seconds = max(self.step_seconds, now - self.last)
        self.last = now
        if self.deadline is None:
            return None
        left = self.deadline - time.time()
        if left > self.step_seconds + self.save_estimate() + MARGIN_SECONDS:
            return None
        return self.describe()

    def save_estimate(self) -> float:
        return self.save_seconds if self.save_seconds is not None else FIRST_SAVE_GUESS

    def describe(self) -> str:
        left = (self.deadline or time.time()) - time.time()
        guess = " (a guess: no save timed yet)" if self.save_seconds is None else ""
        return (
            f"stopping before the time limit: {left:.0f} s left, a step takes {self.step_seconds:.1f} s "
            f"and a save {self.save_estimate():.1f} s{guess}"
        )

    def save_started(self) -> None:
        self.saving_since = time.monotonic()

    def save_ended(self) -> None:
        if self.saving_since is not None:
            took = time.monotonic() - self.saving_since
            self.save_seconds = max(self.save_seconds or 0.0, took)
            self.saving_since = None
        self.last = time.monotonic()  # a save is not a step


def agreed(flags: list[bool], args: Any) -> list[bool]:
    """Each flag true on every rank as soon as it is true on any rank: stop (a signal, the time
    limit) and save (the interval is due), in one tiny all-reduce per step."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flags
    device = args.device if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def separate_step_counters(optimizer: Any) -> int:
    """Neutralise a DeepSpeed 0.19 bug (resume-facts): loading a universal checkpoint under ZeRO-3
    gives every optimizer sub-group the *same* ``step`` tensor, which torch's Adam increments once
    per sub-group, so bias correction runs k times too fast and the loss drifts with no error.
    Runs after the checkpoint load (``on_train_begin``); returns how many counters it separated."""
    import torch

    inner = optimizer
    while getattr(inner, "optimizer", None) is not None:  # accelerate's and DeepSpeed's wrappers
        inner = inner.optimizer
    seen: set[int] = set()
    separated = 0
    for param_state in getattr(inner, "state", {}).values():
        step = param_state.get("step")
        if isinstance(step, torch.Tensor):
            if id(step) in seen:
                param_state["step"] = step.clone()
                separated += 1
            seen.add(id(step))
    return separated


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mark(folder: Path, resolved: Resolved, args: Any, state: Any, attempt_dir: Path) -> None:
    """The completion marker, with the topology and batch the checkpoint was saved under, then the
    retention limit applied to complete checkpoints only (never the one this attempt resumed from)."""
    from launcher.records import checkpoints

    world = int(args.world_size)
    micro, accum = int(args.per_device_train_batch_size), int(args.gradient_accumulation_steps)
    info = {
        "step": state.global_step,
        "world_size": world,
        "zero_stage": resolved.spec.zero.stage,
        "micro": micro,
        "grad_accum": accum,
        "global_batch": product(micro, accum, world),
        "recipe": resolved.spec.recipe,
        "save_only_model": bool(args.save_only_model),
        "attempt": attempt_dir.name,
    }
    checkpoints.mark_complete(folder, info)
    keep = resolved.spec.checkpointing.keep
    if keep is not None:
        protect = Path(resolved.resume.checkpoint) if resolved.resume else None
        checkpoints.prune(Path(args.output_dir), keep, protect)


def pin_resume(checkpoint: str) -> None:
    """The attempt resumes from the launcher's choice, whatever the recipe passes to ``train``: a
    recipe that resumes on its own still works, one that never resumes is resumed."""
    from transformers import Trainer

    original = Trainer.train

    def train(self: Any, resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        if (
            resume_from_checkpoint not in (None, False, True, checkpoint)
            and int(os.environ.get("RANK", "0")) == 0
        ):
            print(f"ftlaunch: resuming from {checkpoint}, not {resume_from_checkpoint}", file=sys.stderr)
        return original(self, checkpoint, *args, **kwargs)

    Trainer.train = train  # type: ignore[method-assign]
