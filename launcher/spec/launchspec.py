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
from launcher.spec.sections import Batch as Batch
from launcher.spec.sections import Checkpointing as Checkpointing
from launcher.spec.sections import Faults as Faults
from launcher.spec.sections import OffloadDevice as OffloadDevice
from launcher.spec.sections import Precision as Precision
from launcher.spec.sections import Slurm as Slurm
from launcher.spec.sections import Topology as Topology
from launcher.spec.sections import Zero as Zero
from launcher.spec.sections import option


@dataclass(frozen=True)
class LaunchSpec:
    recipe: str | None = option("recipe", "the training script to run (an ordinary TRL script)")
    args: tuple[str, ...] = option("args", "arguments passed to the recipe unchanged", default=())
    topology: Topology = field(default_factory=Topology)
    batch: Batch = field(default_factory=Batch)
    zero: Zero = field(default_factory=Zero)
    model: str | None = option(
        "--model",
        "the model to size --zero auto for: a local model folder or its config.json (default: the "
        "recipe's --model_name_or_path, if local or in the Hugging Face cache)",
        metavar="PATH",
    )
    gpu_memory: str | None = option(
        "--gpu-memory",
        "memory of each GPU for --zero auto, e.g. 80GB, 80GiB or 81920MiB (default: nvidia-smi's, "
        "on this machine)",
        metavar="SIZE",
    )
    precision: Precision | None = option("--precision", "bf16, fp16 or fp32 (default: the recipe's)")
    max_grad_norm: float | None = option("--max-grad-norm", "gradient clipping norm (default: the recipe's)")
    ds_config: str | None = option(
        "--ds-config",
        "a DeepSpeed JSON to start from: the settings ftlaunch does not own are kept, the ones it owns "
        "must agree with the launch",
        metavar="FILE",
    )
    deepspeed: tuple[str, ...] = option(
        "--ds",
        "a DeepSpeed setting ftlaunch does not own, e.g. zero_optimization.overlap_comm=false; VALUE is "
        "read as JSON (repeatable; in a job YAML, a 'deepspeed:' mapping)",
        default=(),
        metavar="KEY=VALUE",
        settings=True,
    )
    ds_config_settings: tuple[str, ...] = option(
        "",
        "the --ds-config file's settings as read at launch, so a resume or a requeue needs no file",
        default=(),
    )
    accelerate: tuple[str, ...] = option(
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
    name: str | None = option("--name", "run name, used in the run folder's name (default: the recipe's)")
    runs_dir: str = option("--runs-dir", "where run folders are created", default="runs")


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
