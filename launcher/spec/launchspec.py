"""The launch spec: one frozen, typed tree that every generated file is rendered from.

A spec is built from a job YAML, from command-line flags, or both (flags win). Every field that
reaches a trainer argument defaults to ``None``, meaning "not decided by the launch": the recipe's
own value is then adopted at run time. That is what lets the rank (``rank/guard.py``) tell a value
the user asked for from one we merely defaulted.

Each field carries its flag and help text in its metadata, so the CLI, the YAML loader and the
error messages read them from one place.
"""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from launcher.errors import SpecError
from launcher.spec import settings

Precision = Literal["bf16", "fp16", "fp32"]


OffloadDevice = Literal["none", "cpu", "nvme"]


def _opt(flag: str, help: str, default: Any = None, **extra: Any) -> Any:
    return field(default=default, metadata={"flag": flag, "help": help, **extra})


@dataclass(frozen=True)
class Topology:
    nodes: int = _opt("--nodes", "number of machines", default=1)
    gpus: int | None = _opt("--gpus", "GPUs per node (one process each)")
    procs: int | None = _opt("--procs", "CPU processes per node, for machines without GPUs (gloo)")

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
    micro: int | None = _opt("--micro-batch", "per-device micro batch (per_device_train_batch_size)")
    grad_accum: int | None = _opt("--grad-accum", "gradient accumulation steps")
    global_batch: int | None = _opt("--global-batch", "global batch = micro x accumulation x world size")


@dataclass(frozen=True)
class Zero:
    stage: int | Literal["auto"] = _opt(
        "--zero",
        "DeepSpeed ZeRO stage 1, 2 or 3; 0 means plain DDP; auto: the lowest stage, then the least "
        "offload, whose memory estimate fits the GPUs (needs the model: --model, or the recipe's local "
        "--model_name_or_path; see ftlaunch estimate)",
        default=0,
    )
    offload_optimizer: OffloadDevice = _opt(
        "--offload-optimizer", "offload optimizer states (ZeRO-2/3): none, cpu or nvme", default="none"
    )
    offload_params: OffloadDevice = _opt(
        "--offload-params", "offload parameters (ZeRO-3 only): none, cpu or nvme", default="none"
    )
    nvme_path: str | None = _opt("--nvme-path", "folder on a fast local disk for nvme offload")


@dataclass(frozen=True)
class Checkpointing:
    save_steps: int | None = _opt("--save-steps", "save a checkpoint every N optimizer steps")
    keep: int | None = _opt(
        "--keep", "keep the newest N complete checkpoints (never the one resumed from); ftlaunch prunes"
    )


@dataclass(frozen=True)
class Faults:
    """A rank that hangs or dies: the node supervisor finds it, and the run restarts by itself from
    its latest complete checkpoint (``run/watchdog.py``, ``launcher/launch.py``)."""

    hang_timeout: float | None = _opt(
        "--hang-timeout",
        "seconds a training step may make no progress on some rank before the run is ended as hung, "
        "every rank's stack saved (default 300; it grows with the measured step time, and saves, "
        "evaluation and the first step get 4x)",
        metavar="SECONDS",
    )
    max_restarts: int = _opt(
        "--max-restarts",
        "restart a run whose rank hung, died or crashed, from its latest complete checkpoint, at most "
        "this many times (default 2; 0: never). A recipe error raised at the same step twice is not retried",
        default=2,
    )


@dataclass(frozen=True)
class Slurm:
    """Where and how to queue the run; mapped to submitit's parameters in ``backends/slurm.py``."""

    enabled: bool = _opt("--slurm", "submit to SLURM through submitit, one task per node", default=False)
    partition: str | None = _opt("--partition", "SLURM partition")
    time: str | None = _opt("--time", "time limit: minutes, HH:MM:SS or D-HH:MM:SS (default 24:00:00)")
    account: str | None = _opt("--account", "SLURM account to charge")
    qos: str | None = _opt("--qos", "SLURM quality of service")
    constraint: str | None = _opt("--constraint", "SLURM node constraint (features)")
    exclude: str | None = _opt(
        "--exclude", "nodes the job must not run on, e.g. gpu07,gpu12 (sbatch --exclude)", metavar="NODES"
    )
    no_requeue: bool = _opt(
        "--no-requeue",
        "do not requeue the job after a rank or node failed or hung (pre-emption and the time limit "
        "still requeue it: the ranks saved); continue by hand with ftlaunch resume",
        default=False,
    )
    exclusive: bool = _opt("--exclusive", "whole nodes for this job", default=False)
    cpus_per_task: int | None = _opt("--cpus-per-task", "CPUs for each node's task (default: SLURM's)")
    mem: str | None = _opt("--mem", "memory per node, e.g. 64G (default: SLURM's)")
    sbatch: tuple[str, ...] = _opt("--sbatch", "extra sbatch option KEY=VALUE (repeatable)", default=())
    setup: tuple[str, ...] = _opt(
        "--setup",
        "shell line run in the job script before the nodes start, e.g. 'module load cuda' (repeatable)",
        default=(),
    )


@dataclass(frozen=True)
class LaunchSpec:
    recipe: str | None = _opt("recipe", "the training script to run (an ordinary TRL script)")
    args: tuple[str, ...] = _opt("args", "arguments passed to the recipe unchanged", default=())
    topology: Topology = field(default_factory=Topology)
    batch: Batch = field(default_factory=Batch)
    zero: Zero = field(default_factory=Zero)
    model: str | None = _opt(
        "--model",
        "the model to size --zero auto for: a local model folder or its config.json (default: the "
        "recipe's --model_name_or_path, if local or in the Hugging Face cache)",
        metavar="PATH",
    )
    gpu_memory: str | None = _opt(
        "--gpu-memory",
        "memory of each GPU for --zero auto, e.g. 80GB, 80GiB or 81920MiB (default: nvidia-smi's, "
        "on this machine)",
        metavar="SIZE",
    )
    precision: Precision | None = _opt("--precision", "bf16, fp16 or fp32 (default: the recipe's)")
    max_grad_norm: float | None = _opt("--max-grad-norm", "gradient clipping norm (default: the recipe's)")
    ds_config: str | None = _opt(
        "--ds-config",
        "a DeepSpeed JSON to start from: the settings ftlaunch does not own are kept, the ones it owns "
        "must agree with the launch",
        metavar="FILE",
    )
    deepspeed: tuple[str, ...] = _opt(
        "--ds",
        "a DeepSpeed setting ftlaunch does not own, e.g. zero_optimization.overlap_comm=false; VALUE is "
        "read as JSON (repeatable; in a job YAML, a 'deepspeed:' mapping)",
        default=(),
        metavar="KEY=VALUE",
        settings=True,
    )
    ds_config_settings: tuple[str, ...] = _opt(
        "",
        "the --ds-config file's settings as read at launch, so a resume or a requeue needs no file",
        default=(),
    )
    accelerate: tuple[str, ...] = _opt(
        "--accelerate",
        "an 'accelerate launch' option ftlaunch does not own, KEY=VALUE (or KEY for a switch), e.g. "
        "dynamo_backend=no (repeatable)",
        default=(),
        metavar="KEY=VALUE",
        settings=True,
    )
    checkpointing: Checkpointing = field(default_factory=Checkpointing)
    faults: Faults = field(default_factory=Faults)
    slurm: Slurm = field(default_factory=Slurm)
    name: str | None = _opt("--name", "run name, used in the run folder's name (default: the recipe's)")
    runs_dir: str = _opt("--runs-dir", "where run folders are created", default="runs")


def is_section(f: dataclasses.Field[Any]) -> bool:
    factory = f.default_factory
    return factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory)


@dataclass(frozen=True)
class Leaf:
    """One settable value of the spec: its dotted YAML key, its field and its declared type."""

    key: str
    field: dataclasses.Field[Any]
    hint: Any

    @property
    def flag(self) -> str:
        return str(self.field.metadata.get("flag", ""))

    @property
    def help(self) -> str:
        return str(self.field.metadata.get("help", ""))


def leaves(cls: type = LaunchSpec, prefix: str = "") -> list[Leaf]:
    """Every settable value of the spec, sections flattened, in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[Leaf] = []
    for f in dataclasses.fields(cls):
        if is_section(f):
            out += leaves(typing.cast(type, f.default_factory), f"{prefix}{f.name}.")
        else:
            out.append(Leaf(prefix + f.name, f, hints[f.name]))
    return out


def from_mapping(data: Mapping[str, Any], source: str) -> LaunchSpec:
    """Build a spec from a nested mapping (a parsed job YAML). All problems are reported together."""
    problems: list[str] = []
    spec = typing.cast(LaunchSpec, _build(LaunchSpec, data, "", source, problems))
    if problems:
        raise SpecError(problems)
    return spec


def _build(cls: type, data: Any, prefix: str, source: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "top level"
        problems.append(f"{source}: '{where}' must be a mapping, got {shown(data)}")
        return cls()
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        f = by_name.get(str(key))
        if f is None:
            valid = textwrap.fill(", ".join(sorted(by_name)), 96, subsequent_indent="    ")
            unknown = f"{prefix}{clip(str(key))}"
            problems.append(f"{source}: unknown key '{unknown}'. Valid keys here:\n    {valid}")
            continue
        if is_section(f):
            section = typing.cast(type, f.default_factory)
            values[f.name] = _build(section, raw, f"{prefix}{key}.", source, problems)
        else:
            if f.metadata.get("settings") and isinstance(raw, Mapping):
                raw = settings.from_yaml(raw)  # a mapping of settings is the same settings, flattened
            values[f.name] = coerce(hints[f.name], raw, f"{source}: '{prefix}{key}'", problems)
    return cls(**values)


SHOWN_CHARS = 60  # an echoed value is cut to this: a hostile or huge value never floods the screen


INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # ASCII (int() takes '٣'), and bounded: int("9" * 5000) raises


NUMBER = re.compile(r"[+-]?([0-9]{1,30}\.?[0-9]{0,30}|\.[0-9]{1,30})([eE][+-]?[0-9]{1,4})?")


def clip(text: str) -> str:
    """Text as error messages echo it: cut to one short line."""
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}..."


def shown(raw: Any) -> str:
    return clip(repr(raw))


def coerce(hint: Any, raw: Any, where: str, problems: list[str]) -> Any:
    """Check a raw value against a declared type; strings (the command line, a job YAML, which is
    read without YAML's implicit typing) are parsed here, by the declared type and nothing else.

    A bad value is recorded in ``problems`` and ``None`` returned, so that every problem of the
    input is reported in one error rather than one per attempt.
    """
    if raw is None:
        if type(None) not in typing.get_args(hint):
            problems.append(f"{where}: needs a value ({describe_type(hint)}), got nothing")
        return None
    if _has_nul(raw):
        problems.append(f"{where}: {shown(raw)} contains a NUL byte, which no program can receive")
        return None
    for kind in _alternatives(hint):
        ok, value = _convert(kind, raw)
        if ok:
            return value
    problems.append(f"{where}: {shown(raw)} is not {describe_type(hint)}")
    return None


def _has_nul(raw: Any) -> bool:
    if isinstance(raw, str):
        return "\0" in raw
    return isinstance(raw, (list, tuple)) and any(isinstance(a, str) and "\0" in a for a in raw)


def describe_type(hint: Any) -> str:
    names = []
    for kind in _alternatives(hint):
        if typing.get_origin(kind) is Literal:
            names.append("one of " + ", ".join(map(str, typing.get_args(kind))))
        elif kind is tuple or typing.get_origin(kind) is tuple:
            names.append("a list of strings (quote any value that YAML would read otherwise)")
        else:
            names.append(
                {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
                    kind, str(kind)
                )
            )
    return " or ".join(names)


def _alternatives(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _convert(kind: Any, raw: Any) -> tuple[bool, Any]:
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        return (raw in choices, raw)
    if kind is int:
        if isinstance(raw, bool):
            return (False, None)
        if isinstance(raw, int):
            return (True, raw)
        if isinstance(raw, str) and INTEGER.fullmatch(raw.strip()):
            return (True, int(raw))
        return (False, None)
    if kind is float:
        if isinstance(raw, str) and NUMBER.fullmatch(raw.strip()):
            raw = float(raw)
        # NaN and infinity are refused: they are not JSON, and a NaN clipping norm clips nothing.
        finite = isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw)
        return (finite, float(raw) if finite else None)
    if kind is bool:
        if isinstance(raw, bool):
            return (True, raw)
        text = str(raw).lower() if isinstance(raw, str) else ""
        return (text in ("true", "false"), text == "true")
    if kind is str:
        return (isinstance(raw, str), raw)
    if typing.get_origin(kind) is tuple:  # strings only: a value must reach the recipe as written
        ok = isinstance(raw, (list, tuple)) and all(isinstance(a, str) for a in raw)
        return (ok, tuple(raw) if ok else None)
    return (False, None)


def merge(base: LaunchSpec, overrides: Mapping[str, Any]) -> LaunchSpec:
    """Return ``base`` with the dotted keys in ``overrides`` replaced (command-line flags win over YAML)."""
    spec = base
    for dotted, value in overrides.items():
        spec = _replace_path(spec, dotted.split("."), value)
    return spec


def _replace_path(obj: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    child = getattr(obj, path[0])
    return dataclasses.replace(obj, **{path[0]: _replace_path(child, path[1:], value)})


def value_at(spec: LaunchSpec, key: str) -> Any:
    """The value of a dotted leaf key (``zero.stage``)."""
    value: Any = spec
    for part in key.split("."):
        value = getattr(value, part)
    return value


def to_dict(spec: LaunchSpec) -> dict[str, Any]:
    """Plain, JSON-ready form: what ``spec.json`` in a run folder holds."""
    return typing.cast(dict[str, Any], _plain(dataclasses.asdict(spec)))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
