"""Trainer-argument overrides: the spec's decided values under TrainingArguments' names.

Only values the launch decided appear here; ``entry.py`` fills them into the recipe's arguments
where the recipe left the default, and refuses a conflicting explicit value before model load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launcher.rules import Resolved


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
    if spec.topology.on_cpu:
        overrides["use_cpu"] = True
    return overrides
