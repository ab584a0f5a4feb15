"""The DeepSpeed JSON: batch, clipping, precision and ZeRO, as typed numbers or ``"auto"``."""

from __future__ import annotations

from typing import Any

from launcher.rules import Resolved
from launcher.spec import Zero

AUTO = "auto"

# Dynamic loss scaling (loss_scale 0) is the only sane fp16 default; the rest are DeepSpeed's values.
FP16_SCALING = {
    "loss_scale": 0,
    "loss_scale_window": 1000,
    "initial_scale_power": 16,
    "hysteresis": 2,
    "min_loss_scale": 1,
}


def render_deepspeed(resolved: Resolved) -> dict[str, Any]:
    spec, batch = resolved.spec, resolved.batch
    config: dict[str, Any] = {
        "train_batch_size": _or_auto(batch.global_batch),
        "train_micro_batch_size_per_gpu": _or_auto(batch.micro),
        "gradient_accumulation_steps": _or_auto(batch.grad_accum),
        "gradient_clipping": _or_auto(spec.max_grad_norm),
        "bf16": {"enabled": _or_auto(None if spec.precision is None else spec.precision == "bf16")},
        "fp16": {
            "enabled": _or_auto(None if spec.precision is None else spec.precision == "fp16"),
            **FP16_SCALING,
        },
        "zero_optimization": zero_section(spec.zero, pin_memory=not spec.topology.on_cpu),
        "wall_clock_breakdown": False,
    }
    if spec.zero.offload_optimizer != "none":
        # The HF Trainer hands DeepSpeed its own (torch) optimizer; with offload DeepSpeed refuses a
        # client optimizer unless told otherwise. One optimizer source: the recipe's ``optim``.
        config["zero_force_ds_cpu_optimizer"] = False
    if resolved.resume is not None and resolved.resume.universal:
        # For this one attempt only: its checkpoint was saved on another world size. Checkpoints
        # saved from here on are ordinary ones (resume-facts: leaving it on breaks the next resume).
        config["checkpoint"] = {"load_universal": True}
    return config


def zero_section(zero: Zero, pin_memory: bool) -> dict[str, Any]:
    section: dict[str, Any] = {"stage": zero.stage}
    if zero.stage >= 2:
        section.update(overlap_comm=True, contiguous_gradients=True, reduce_bucket_size=AUTO)
    if zero.stage == 3:
        section.update(
            stage3_prefetch_bucket_size=AUTO,
            stage3_param_persistence_threshold=AUTO,
            stage3_max_live_parameters=1_000_000_000,
            stage3_max_reuse_distance=1_000_000_000,
            sub_group_size=1_000_000_000,
            # Without this a ZeRO-3 save holds empty or partial weights (peft #453, DeepSpeed #7900).
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if zero.offload_optimizer != "none":
        section["offload_optimizer"] = _offload(zero.offload_optimizer, zero.nvme_path, pin_memory)
    if zero.offload_params != "none":
        section["offload_param"] = _offload(zero.offload_params, zero.nvme_path, pin_memory)
    return section


def _offload(device: str, nvme_path: str | None, pin_memory: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"device": device, "pin_memory": pin_memory}
    if device == "nvme":
        out["nvme_path"] = nvme_path
    return out


def _or_auto(value: Any) -> Any:
    return AUTO if value is None else value
