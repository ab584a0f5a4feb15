"""The accelerate config: process layout only (see the package docstring for why), and the
user's extra ``accelerate launch`` options (``--accelerate``), which go on its command line.

``OWNED_OPTIONS`` names the launch options ftlaunch sets itself, in this YAML or on the command
line it builds, and how to set each through ftlaunch; ``rules/passthrough.py`` refuses those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from launcher.spec.decided import Resolved


_LAYOUT = "--gpus / --procs and --nodes"


_ZERO = "--zero, --offload-optimizer, --offload-params and --ds"


_LOGS = "ftlaunch logs (ftlaunch keeps each rank's log in the run folder)"


_STARTS = "ftlaunch itself (it starts and connects every node)"


OWNED_OPTIONS: dict[str, str] = {
    "config_file": "ftlaunch's flags (ftlaunch renders accelerate.yaml)",
    "num_processes": _LAYOUT,
    "num_machines": "--nodes",
    "machine_rank": _STARTS,
    "main_process_ip": _STARTS,
    "main_process_port": _STARTS,
    "rdzv_backend": _STARTS,
    "rdzv_conf": _STARTS,
    "same_network": _STARTS,
    "max_restarts": "ftlaunch resume (a failed attempt continues from its latest checkpoint)",
    "gpu_ids": "CUDA_VISIBLE_DEVICES",
    "cpu": "--procs",
    "multi_gpu": "--gpus",
    "tpu": "--gpus or --procs",
    "mixed_precision": "--precision",
    "use_deepspeed": "--zero",
    "use_fsdp": "--zero (ftlaunch runs DDP or DeepSpeed ZeRO)",
    "use_megatron_lm": "--zero (ftlaunch runs DDP or DeepSpeed ZeRO)",
    "use_parallelism_config": "--zero (ftlaunch runs DDP or DeepSpeed ZeRO)",
    "deepspeed_config_file": "--ds-config",
    "zero_stage": "--zero",
    "offload_optimizer_device": "--offload-optimizer",
    "offload_param_device": "--offload-params",
    "offload_optimizer_nvme_path": "--nvme-path",
    "offload_param_nvme_path": "--nvme-path",
    "zero3_init_flag": "--zero 3",
    "zero3_save_16bit_model": "--zero 3",
    "gradient_accumulation_steps": "--grad-accum",
    "gradient_clipping": "--max-grad-norm",
    "deepspeed_hostfile": _STARTS,
    "deepspeed_inclusion_filter": _STARTS,
    "deepspeed_exclusion_filter": _STARTS,
    "deepspeed_multinode_launcher": _STARTS,
    "tee": _LOGS,
    "log_dir": _LOGS,
    "role": _LOGS,
    "module": "ftlaunch itself (it runs the recipe through its entry)",
    "no_python": "ftlaunch itself (it runs the recipe through its entry)",
    "aws_access_key_id": "the environment (an option is written to the run folder's command.sh)",
    "aws_secret_access_key": "the environment (an option is written to the run folder's command.sh)",
}


def option_name(key: str) -> str:
    """accelerate spells each option both ways (``--dynamo_backend``, ``--dynamo-backend``)."""
    return key.strip().lstrip("-").replace("-", "_")


def accelerate_options(options: tuple[str, ...]) -> list[str]:
    """The user's ``accelerate launch`` options, the last one per option winning: ``KEY=VALUE``
    as ``--KEY=VALUE`` (a value starting with '-' stays a value), a bare ``KEY`` as the switch."""
    chosen: dict[str, str | None] = {}
    for setting in options:
        key, sep, value = setting.partition("=")
        chosen.pop(option_name(key), None)
        chosen[option_name(key)] = value if sep else None
    return [f"--{name}" if value is None else f"--{name}={value}" for name, value in chosen.items()]


def render_accelerate(resolved: Resolved, deepspeed_path: str) -> dict[str, Any]:
    """accelerate's ``ClusterConfig`` as a dict.

    CPU runs still say ``MULTI_GPU``/``DEEPSPEED`` and leave accelerate's ``use_cpu`` off: its CPU
    path (``--cpu``, ``MULTI_CPU``) silently starts a single process unless mpirun is used, whereas
    this layout gives real gloo workers through torchrun; the trainer gets ``use_cpu=True`` instead.
    A node's rank, head and port are flags of its command (``backends.base.node_command``): one file
    serves every node.
    """
    spec = resolved.spec
    topo = spec.topology
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": _distributed_type(resolved),
        "num_machines": topo.nodes,
        "num_processes": topo.world_size,
        "machine_rank": 0,
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
    }
    if resolved.uses_deepspeed:
        config["deepspeed_config"] = {
            "deepspeed_config_file": deepspeed_path,
            "deepspeed_multinode_launcher": "standard",
            "zero3_init_flag": spec.zero.stage == 3,
        }
    return config


def _distributed_type(resolved: Resolved) -> str:
    if resolved.uses_deepspeed:
        return "DEEPSPEED"
    return "MULTI_GPU" if resolved.world_size > 1 else "NO"
