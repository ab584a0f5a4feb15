"""The launch spec's sections (topology, batch, ZeRO, checkpoints, faults, SLURM): each field
carries its flag and help text in its metadata, read by the CLI, the YAML loader and the errors.
``launchspec`` assembles them into ``LaunchSpec``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Precision = Literal["bf16", "fp16", "fp32"]


OffloadDevice = Literal["none", "cpu", "nvme"]


def option(flag: str, help: str, default: Any = None, **extra: Any) -> Any:
    return field(default=default, metadata={"flag": flag, "help": help, **extra})


@dataclass(frozen=True)
class Topology:
    nodes: int = option("--nodes", "number of machines", default=1)
    gpus: int | None = option("--gpus", "GPUs per node (one process each)")
    procs: int | None = option("--procs", "CPU processes per node, for machines without GPUs (gloo)")

    @property
    def per_node(self) -> int:
        return self.gpus if self.gpus is not None else (self.procs if self.procs is not None else 1)

    @property
    def world_size(self) -> int:
        """Data-parallel world size: every process holds a full replica (no tensor/pipeline split)."""
        return self.nodes * self.per_node

    @property
    def on_cpu(self) -> bool:
        return self.procs is not None


@dataclass(frozen=True)
class Batch:
    micro: int | None = option("--micro-batch", "per-device micro batch (per_device_train_batch_size)")
    grad_accum: int | None = option("--grad-accum", "gradient accumulation steps")
    global_batch: int | None = option("--global-batch", "global batch = micro x accumulation x world size")


@dataclass(frozen=True)
class Zero:
    stage: int | Literal["auto"] = option(
        "--zero",
        "DeepSpeed ZeRO stage 1, 2 or 3; 0 means plain DDP; auto: the lowest stage, then the least "
        "offload, whose memory estimate fits the GPUs (needs the model: --model, or the recipe's local "
        "--model_name_or_path; see ftlaunch estimate)",
        default=0,
    )
    offload_optimizer: OffloadDevice = option(
        "--offload-optimizer", "offload optimizer states (ZeRO-2/3): none, cpu or nvme", default="none"
    )
    offload_params: OffloadDevice = option(
        "--offload-params", "offload parameters (ZeRO-3 only): none, cpu or nvme", default="none"
    )
    nvme_path: str | None = option("--nvme-path", "folder on a fast local disk for nvme offload")


@dataclass(frozen=True)
class Checkpointing:
    save_steps: int | None = option("--save-steps", "save a checkpoint every N optimizer steps")
    keep: int | None = option(
        "--keep", "keep the newest N complete checkpoints (never the one resumed from); ftlaunch prunes"
    )
    save_every: str | None = option(
        "--save-every",
        "auto: choose the checkpoint interval from the measured save cost (see --save-overhead, "
        "--max-lost); or a time of training such as 15m, 90s, 1h. Instead of --save-steps",
        metavar="auto|TIME",
    )
    save_overhead: str | None = option(
        "--save-overhead",
        "with --save-every auto: the largest share of the time spent saving (default 3%%)",
        metavar="SHARE",
    )
    max_lost: str | None = option(
        "--max-lost",
        "with --save-every auto: the most training time a crash may lose, e.g. 20m (saves more often)",
        metavar="TIME",
    )


@dataclass(frozen=True)
class Faults:
    """A rank that hangs or dies: the node supervisor finds it, and the run restarts by itself from
    its latest complete checkpoint (``run/watchdog.py``, ``launcher/launch.py``)."""

    hang_timeout: float | None = option(
        "--hang-timeout",
        "seconds a training step may make no progress on some rank before the run is ended as hung, "
        "every rank's stack saved (default 300; it grows with the measured step time, and saves, "
        "evaluation and the first step get 4x)",
        metavar="SECONDS",
    )
    max_restarts: int = option(
        "--max-restarts",
        "restart a run whose rank hung, died or crashed, from its latest complete checkpoint, at most "
        "this many times (default 2; 0: never). A recipe error raised at the same step twice is not retried",
        default=2,
    )


@dataclass(frozen=True)
class Slurm:
    """Where and how to queue the run; mapped to submitit's parameters in ``backends/slurm.py``."""

    enabled: bool = option("--slurm", "submit to SLURM through submitit, one task per node", default=False)
    partition: str | None = option("--partition", "SLURM partition")
    time: str | None = option("--time", "time limit: minutes, HH:MM:SS or D-HH:MM:SS (default 24:00:00)")
    account: str | None = option("--account", "SLURM account to charge")
    qos: str | None = option("--qos", "SLURM quality of service")
    constraint: str | None = option("--constraint", "SLURM node constraint (features)")
    exclude: str | None = option(
        "--exclude", "nodes the job must not run on, e.g. gpu07,gpu12 (sbatch --exclude)", metavar="NODES"
    )
    no_requeue: bool = option(
        "--no-requeue",
        "do not requeue the job after a rank or node failed or hung (pre-emption and the time limit "
        "still requeue it: the ranks saved); continue by hand with ftlaunch resume",
        default=False,
    )
    exclusive: bool = option("--exclusive", "whole nodes for this job", default=False)
    cpus_per_task: int | None = option("--cpus-per-task", "CPUs for each node's task (default: SLURM's)")
    mem: str | None = option("--mem", "memory per node, e.g. 64G (default: SLURM's)")
    sbatch: tuple[str, ...] = option("--sbatch", "extra sbatch option KEY=VALUE (repeatable)", default=())
    setup: tuple[str, ...] = option(
        "--setup",
        "shell line run in the job script before the nodes start, e.g. 'module load cuda' (repeatable)",
        default=(),
    )
