"""DeepSpeed's and accelerate's own judgement of the user's settings, before a real launch.

The light checks (``rules/passthrough.py`` with ``render/dsschema.py``) know the keys users tune
most and run everywhere, ``--dry-run`` included. These know every key, because they ask the
installed libraries: DeepSpeed's config classes for the merged ``ds_config.json``, accelerate's
own parser for the ``--accelerate`` options. They import torch, so they run on the launch path
only (``launch.execute``, before anything is written or started), and only when the user gave such
settings: ftlaunch's own rendering is held against the same classes by the tests.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import enum
import os
import pathlib
import types
import typing
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from launcher.render.accelerate import accelerate_options, option_name
from launcher.render.deepspeed import render_deepspeed
from launcher.render.dsschema import conform, what
from launcher.spec.launchspec import LaunchSpec, clip
from launcher.spec.settings import parsed

if TYPE_CHECKING:
    from launcher.spec.decided import Resolved


MESSAGE_CHARS = 300  # a library's message, cut to a readable length


def problems(resolved: Resolved) -> list[str]:
    spec = resolved.spec
    found = accelerate_problems(spec.accelerate) if spec.accelerate else []
    if resolved.uses_deepspeed and (spec.deepspeed or spec.ds_config_settings):
        found += deepspeed_problems(resolved)
    return found


# ---------------------------------------------------------------- DeepSpeed


def deepspeed_problems(resolved: Resolved) -> list[str]:
    """Every section DeepSpeed models strictly is checked key by key (unknown keys with the
    nearest real one, strings where numbers belong, which DeepSpeed's lax models would accept);
    then DeepSpeed's ``DeepSpeedConfig`` reads the whole config, and a top-level key it never
    asks for is one it does not know."""
    config = render_deepspeed(resolved)
    with _accelerator_for(resolved.spec):
        from deepspeed.runtime.config import DeepSpeedConfig
        from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    models = {
        "zero_optimization": DeepSpeedZeroConfig,
        "bf16": DeepSpeedBF16Config,
        "fp16": DeepSpeedFP16Config,
    }
    found = [p for name, model in models.items() for p in model_problems(model, config.get(name), name)]
    if not found:
        found = config_problems(DeepSpeedConfig, runnable(config, resolved))
    return [f"{key}: {why} (from {origin(resolved.spec, key)})" if key else why for key, why in found]


@contextlib.contextmanager
def _accelerator_for(spec: LaunchSpec) -> Iterator[None]:
    """On a CPU run DeepSpeed is told its accelerator, as the ranks are (``render.env``): it would
    otherwise probe for CUDA and warn on import."""
    if not spec.topology.on_cpu or "DS_ACCELERATOR" in os.environ:
        yield
        return
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        yield
    finally:
        del os.environ["DS_ACCELERATOR"]


Found = list[tuple[str, str]]  # (dotted key, or "" for the whole config; why DeepSpeed refuses it)


def model_problems(model: Any, data: Any, prefix: str) -> Found:
    """``data`` against one of DeepSpeed's pydantic models, by its field names and aliases."""
    if not isinstance(data, dict):
        return []  # DeepSpeedConfig says what is wrong with it
    fields = {key: info for name, info in model.model_fields.items() for key in {name, info.alias or name}}
    found: Found = []
    for key, value in data.items():
        dotted = f"{prefix}.{key}"
        info = fields.get(key)
        if info is None:
            found.append((dotted, f"DeepSpeed has no such setting{nearest(key, current(model), prefix)}"))
            continue
        kind = plain_kind(info.annotation)
        if hasattr(kind, "model_fields"):
            found += model_problems(kind, value, dotted)
        elif kind in (bool, int, float, str) and value not in ("auto", None):
            needed = conform(kind, value)[1]
            if needed is not None:
                found.append((dotted, f"{clip(repr(value))} is {what(value)}, but DeepSpeed needs {needed}"))
    return found


def plain_kind(annotation: Any) -> Any:
    """``Optional[X]`` as X, an int or str enum as int or str, a path as str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = args[0] if len(args) == 1 else annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return int if issubclass(annotation, int) else str if issubclass(annotation, str) else annotation
    return str if annotation is pathlib.Path else annotation


def current(model: Any) -> list[str]:
    """The names a user should write: aliases where DeepSpeed has them, no deprecated field."""
    names = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if not extra.get("deprecated"):
            names.append(info.alias or name)
    return names


def nearest(key: str, names: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(names), n=1)
    return f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""


def runnable(config: dict[str, Any], resolved: Resolved) -> dict[str, Any]:
    """The config as DeepSpeed sees it once transformers filled the batch in. Here the world size
    is 1 (no process group), so the global batch is left for DeepSpeed to derive."""
    out = copy.deepcopy(config)
    out.pop("train_batch_size", None)
    out["train_micro_batch_size_per_gpu"] = resolved.batch.micro or 1
    out["gradient_accumulation_steps"] = resolved.batch.grad_accum or 1
    return out


class ReadKeys(dict[str, Any]):
    """A config that notes each top-level key DeepSpeed asks for (present or not). DeepSpeed
    copies it shallowly, and the copy shares the notes."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def config_problems(config_class: Any, config: dict[str, Any]) -> Found:
    read = ReadKeys(config)
    try:
        config_class(read)
    except Exception as err:  # DeepSpeed refuses with pydantic, assertions, ValueError, its own error
        return refusals(err)
    return [
        (key, f"DeepSpeed has no such setting (it never reads it){nearest(key, read.asked)}")
        for key in config
        if key not in read.asked
    ]


def refusals(err: Exception) -> Found:
    errors = getattr(err, "errors", None)
    if callable(errors):  # pydantic: one line per field, its place within a section
        title = getattr(err, "title", "DeepSpeed")
        return [("", f"DeepSpeed's {title} refuses {_field(e)}: {e['msg']}") for e in errors()]
    return [("", f"DeepSpeed refuses the merged config: {str(err).strip()[:MESSAGE_CHARS]}")]


def _field(error: dict[str, Any]) -> str:
    return f"{'.'.join(map(str, error['loc']))} = {clip(repr(error.get('input')))}"


def origin(spec: LaunchSpec, key: str) -> str:
    """Which of the user's settings set ``key`` (the last one does): for the message to name it."""
    sources = [(k, f"--ds {clip(s)}") for k, s, _ in parsed(spec.deepspeed)]
    sources = [
        (k, clip(spec.ds_config or "--ds-config")) for k, _, _ in parsed(spec.ds_config_settings)
    ] + sources
    for leaf, label in reversed(sources):
        if leaf == key or leaf.startswith(f"{key}.") or key.startswith(f"{leaf}."):
            return label
    return "--ds, deepspeed: or --ds-config"


# ---------------------------------------------------------------- accelerate


def accelerate_problems(options: tuple[str, ...]) -> list[str]:
    """Each option against ``accelerate launch``'s own parser: that it exists, that a switch has
    no value and an option has one, and that the value is one accelerate takes."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    known = {option_name(o): a for a in parser._actions for o in a.option_strings if o.startswith("--")}
    found = []
    for setting in options:
        key, sep, _ = setting.partition("=")
        name = option_name(key)
        action = known.get(name)
        if action is None:
            found.append(
                f"--accelerate {clip(setting)}: not an 'accelerate launch' option{nearest(name, known)}"
            )
        elif action.nargs == 0 and sep:
            found.append(
                f"--accelerate {clip(setting)}: {name} is a switch; give it alone: --accelerate {name}"
            )
        elif action.nargs != 0 and not sep:
            found.append(f"--accelerate {clip(setting)}: {name} needs a value: --accelerate {name}=VALUE")
    return found or value_problems(parser, options)


def value_problems(parser: Any, options: tuple[str, ...]) -> list[str]:
    def refuse(message: str) -> None:
        raise ValueError(message)

    parser.error = refuse
    try:
        parser.parse_args([*accelerate_options(options), "recipe.py"])
    except ValueError as err:
        return [f"--accelerate: accelerate refuses {str(err)[:MESSAGE_CHARS]}"]
    return []
