"""What DeepSpeed expects of the settings users tune most, known without importing DeepSpeed.

``--dry-run`` and ``--help`` never import torch, so the light checks read this table; a launch then
checks the whole merged config with DeepSpeed's own classes (``machine/libcheck.py``), and
``tests/test_ds_overrides.py`` holds every entry against DeepSpeed's own annotations, so the
table cannot drift from the DeepSpeed installed. DeepSpeed's pydantic models are lax (``"8"``
passes as 8, ``"yes"`` as true), so a wrong type written here would otherwise go unnoticed.
"""

from __future__ import annotations

import math
from typing import Any

_ZERO = "zero_optimization"


_OFFLOAD_OPT = f"{_ZERO}.offload_optimizer"


_OFFLOAD_PARAM = f"{_ZERO}.offload_param"


TYPES: dict[str, type] = {
    "train_batch_size": int,
    "train_micro_batch_size_per_gpu": int,
    "gradient_accumulation_steps": int,
    "gradient_clipping": float,
    "steps_per_print": int,
    "wall_clock_breakdown": bool,
    "memory_breakdown": bool,
    "dump_state": bool,
    "prescale_gradients": bool,
    "gradient_predivide_factor": float,
    "zero_allow_untested_optimizer": bool,
    "zero_force_ds_cpu_optimizer": bool,
    "communication_data_type": str,
    "bf16.enabled": bool,
    "fp16.enabled": bool,
    "fp16.loss_scale": float,
    "fp16.initial_scale_power": int,
    "fp16.loss_scale_window": int,
    "fp16.hysteresis": int,
    "fp16.min_loss_scale": int,
    "checkpoint.load_universal": bool,
    "checkpoint.use_node_local_storage": bool,
    f"{_ZERO}.stage": int,
    f"{_ZERO}.contiguous_gradients": bool,
    f"{_ZERO}.overlap_comm": bool,
    f"{_ZERO}.reduce_scatter": bool,
    f"{_ZERO}.reduce_bucket_size": int,
    f"{_ZERO}.allgather_partitions": bool,
    f"{_ZERO}.allgather_bucket_size": int,
    f"{_ZERO}.round_robin_gradients": bool,
    f"{_ZERO}.sub_group_size": int,
    f"{_ZERO}.stage3_prefetch_bucket_size": int,
    f"{_ZERO}.stage3_param_persistence_threshold": int,
    f"{_ZERO}.stage3_model_persistence_threshold": int,
    f"{_ZERO}.stage3_max_live_parameters": int,
    f"{_ZERO}.stage3_max_reuse_distance": int,
    f"{_ZERO}.stage3_gather_16bit_weights_on_model_save": bool,
    f"{_ZERO}.zero_hpz_partition_size": int,
    f"{_ZERO}.zero_quantized_weights": bool,
    f"{_ZERO}.zero_quantized_gradients": bool,
    f"{_ZERO}.ignore_unused_parameters": bool,
    f"{_OFFLOAD_OPT}.device": str,
    f"{_OFFLOAD_OPT}.nvme_path": str,
    f"{_OFFLOAD_OPT}.pin_memory": bool,
    f"{_OFFLOAD_OPT}.buffer_count": int,
    f"{_OFFLOAD_OPT}.ratio": float,
    f"{_OFFLOAD_PARAM}.device": str,
    f"{_OFFLOAD_PARAM}.nvme_path": str,
    f"{_OFFLOAD_PARAM}.pin_memory": bool,
    f"{_OFFLOAD_PARAM}.buffer_count": int,
    f"{_OFFLOAD_PARAM}.buffer_size": int,
    f"{_OFFLOAD_PARAM}.max_in_cpu": int,
}


# "auto" is a value only where transformers fills it in from the trainer's arguments or the model.
AUTO_FILLED = frozenset(
    {
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "bf16.enabled",
        "fp16.enabled",
        f"{_ZERO}.reduce_bucket_size",
        f"{_ZERO}.stage3_prefetch_bucket_size",
        f"{_ZERO}.stage3_param_persistence_threshold",
    }
)


KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def conform(kind: type, value: Any) -> tuple[Any, str | None]:
    """``value`` as DeepSpeed expects ``kind`` (an integral number written ``5e8`` becomes the
    integer), or ``(value, what kind was needed)``. Strings never pass for numbers or booleans."""
    if kind is bool or kind is str:
        return (value, None) if type(value) is kind else (value, KIND_NAMES[kind])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return value, KIND_NAMES[kind]
    if kind is int and isinstance(value, float):
        return (int(value), None) if value.is_integer() else (value, KIND_NAMES[int])
    return value, None


def typed(key: str, value: Any) -> tuple[Any, str | None]:
    """``conform`` by the table; a key the table does not know passes as written (DeepSpeed's own
    check on the launch path judges it)."""
    kind = TYPES.get(key)
    if kind is None or (value == "auto" and key in AUTO_FILLED):
        return value, None
    return conform(kind, value)


def what(value: Any) -> str:
    """How a value reads in an error message: the JSON kind the user actually gave."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else "a number"
