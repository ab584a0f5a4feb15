"""The accelerate config: process layout only (see the package docstring for why)."""

from __future__ import annotations

from typing import Any

from launcher.rules import Resolved


def render_accelerate(
    resolved: Resolved,
    deepspeed_path: str,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
) -> dict[str, Any]:
    """accelerate's ``ClusterConfig`` as a dict.

    CPU runs still say ``MULTI_GPU``/``DEEPSPEED`` and leave accelerate's ``use_cpu`` off: its CPU
    path (``--cpu``, ``MULTI_CPU``) silently starts a single process unless mpirun is used, whereas
    this layout gives real gloo workers through torchrun; the trainer gets ``use_cpu=True`` instead.
    """
    spec = resolved.spec
    topo = spec.topology
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": _distributed_type(resolved),
        "num_machines": topo.nodes,
        "num_processes": topo.world_size,
        "machine_rank": machine_rank,
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
    }
    if main_process_ip is not None:
        config["main_process_ip"] = main_process_ip
    if main_process_port is not None:
        config["main_process_port"] = main_process_port
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
