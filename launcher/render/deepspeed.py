"""The DeepSpeed JSON: batch, clipping, precision and ZeRO from the spec, as typed numbers or
``"auto"``, then the user's own settings (``--ds-config``, ``deepspeed:``, ``--ds``) on top.

The spec's values are *owned*: ``OWNED`` names every key rendered from the spec and how to set it
through ftlaunch, and a user setting never replaces one (``rules/passthrough.py`` refuses those
that try, before anything is rendered).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launcher.render.dsschema import typed
from launcher.spec.launchspec import Zero
from launcher.spec.settings import parsed, put

if TYPE_CHECKING:
    from launcher.spec.decided import Resolved


AUTO = "auto"


# Dynamic loss scaling (loss_scale 0) is the only sane fp16 default; the rest are DeepSpeed's values.
FP16_SCALING = {
    "loss_scale": 0,
    "loss_scale_window": 1000,
    "initial_scale_power": 16,
    "hysteresis": 2,
    "min_loss_scale": 1,
}


_PINNED = "--gpus or --procs (memory is pinned on GPU runs only)"


_GATHER = "--zero 3 (always on there: without it a ZeRO-3 save holds empty weights)"


# Every key rendered from the spec -> how to set it with ftlaunch; "{}" stands for the value.
OWNED: dict[str, str] = {
    "train_batch_size": "--global-batch {}",
    "train_micro_batch_size_per_gpu": "--micro-batch {}",
    "gradient_accumulation_steps": "--grad-accum {}",
    "gradient_clipping": "--max-grad-norm {}",
    "bf16.enabled": "--precision bf16, fp16 or fp32",
    "fp16.enabled": "--precision bf16, fp16 or fp32",
    "zero_optimization.stage": "--zero {}",
    "zero_optimization.stage3_gather_16bit_weights_on_model_save": _GATHER,
    "zero_optimization.offload_optimizer.device": "--offload-optimizer {}",
    "zero_optimization.offload_optimizer.nvme_path": "--nvme-path {}",
    "zero_optimization.offload_optimizer.pin_memory": _PINNED,
    "zero_optimization.offload_param.device": "--offload-params {}",
    "zero_optimization.offload_param.nvme_path": "--nvme-path {}",
    "zero_optimization.offload_param.pin_memory": _PINNED,
    "zero_force_ds_cpu_optimizer": "--offload-optimizer (ftlaunch keeps the recipe's optimizer)",
    "checkpoint.load_universal": "ftlaunch resume (set for an attempt on another world size)",
}


def owner(key: str) -> str | None:
    """The owned key that a setting of ``key`` would set, sit under, or replace as a whole."""
    for owned in OWNED:
        if key == owned or key.startswith(f"{owned}.") or owned.startswith(f"{key}."):
            return owned
    return None


def render_deepspeed(resolved: Resolved) -> dict[str, Any]:
    """The spec's config with the user's settings merged in: the file's first, then the job
    YAML's and the flags' (later ones win per key). Owned keys keep the spec's values; the
    settings were checked by the rules, so here they are only applied."""
    spec = resolved.spec
    config = spec_config(resolved)
    for key, _, value in parsed(spec.ds_config_settings) + parsed(spec.deepspeed):
        if owner(key) is None:
            put(config, key, typed(key, value)[0])
    return config


def spec_config(resolved: Resolved) -> dict[str, Any]:
    """What the spec alone renders: the values ``OWNED`` covers and ftlaunch's defaults."""
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
    stage = zero.stage
    assert isinstance(stage, int), "the rules decide --zero auto before anything is rendered"
    section: dict[str, Any] = {"stage": stage}
    if stage >= 2:
        section.update(overlap_comm=True, contiguous_gradients=True, reduce_bucket_size=AUTO)
    if stage == 3:
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
