"""Trainer-argument overrides: the spec's decided values under TrainingArguments' names.

Only values the launch decided appear here; the rank (``rank/guard.py``) fills them into the
recipe's arguments where the recipe left the default, and refuses a conflicting explicit value
before model load.
``PREFERRED`` values are ftlaunch's choice, not the user's: filled where the recipe left the
default, while an explicit choice of the recipe is kept (and its cost said).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launcher.spec.faults import TRAINER_PG_TIMEOUT, process_group_timeout

if TYPE_CHECKING:
    from launcher.spec.decided import Resolved


# With optimizer offload the step runs on the CPU, where torch's fused AdamW is as fast as DeepSpeed's
# CPU Adam without its op build (bench/offload_step.py, 50M fp32 parameters, 2 threads, 2026-12-01:
# fused 28.6 ms, DeepSpeed 27.4, the for-loop 84, foreach 97). Learning rate, betas, epsilon and
# weight decay stay the trainer's.
OFFLOAD_OPTIMIZER = "adamw_torch_fused"


PREFERRED = ("optim", "ddp_timeout")


def render_trainer_overrides(resolved: Resolved) -> dict[str, Any]:
    spec, batch = resolved.spec, resolved.batch
    overrides: dict[str, Any] = {}
    if batch.micro is not None:
        overrides["per_device_train_batch_size"] = batch.micro
    if batch.grad_accum is not None:
        overrides["gradient_accumulation_steps"] = batch.grad_accum
    if spec.precision is not None:
        overrides["bf16"] = spec.precision == "bf16"
        overrides["fp16"] = spec.precision == "fp16"
    if spec.max_grad_norm is not None:
        overrides["max_grad_norm"] = spec.max_grad_norm
    if spec.checkpointing.save_steps is not None:
        overrides["save_strategy"] = "steps"
        overrides["save_steps"] = spec.checkpointing.save_steps
    if spec.checkpointing.save_every is not None:
        overrides["save_strategy"] = "no"  # the ranks decide when (rank/saving.py, rules/interval.py)
    if spec.topology.on_cpu:
        overrides["use_cpu"] = True
    if spec.zero.offload_optimizer != "none":
        overrides["optim"] = OFFLOAD_OPTIMIZER
    if process_group_timeout(spec) != TRAINER_PG_TIMEOUT:  # a long --hang-timeout: the watchdog acts first
        overrides["ddp_timeout"] = process_group_timeout(spec)
    return overrides
