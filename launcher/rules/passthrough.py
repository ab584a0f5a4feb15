"""The user's own DeepSpeed settings and accelerate options, checked before anything is rendered.

ftlaunch owns what it derives from the spec (``render.deepspeed.OWNED``,
``render.accelerate.OWNED_OPTIONS``): a setting that would change one is refused with the flag
that sets it. A ``--ds-config`` file may repeat an owned value, or leave it ``"auto"``, but not
contradict the launch. The rest passes through, its type checked where ``dsschema`` knows the key;
a real launch then has DeepSpeed and accelerate judge the result (``machine/libcheck.py``).

Pure, like the rules that call it: the file was read into the spec when it was named.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from launcher.render.accelerate import OWNED_OPTIONS, option_name
from launcher.render.deepspeed import OWNED, owner, spec_config
from launcher.render.dsschema import typed, what
from launcher.spec.launchspec import LaunchSpec, clip
from launcher.spec.settings import leaf_items, lookup, parse_value, parsed, split

if TYPE_CHECKING:
    from launcher.spec.decided import Resolved


OPTION = re.compile(r"[a-z][a-z0-9_]*")


NOTHING = (None, False, "none")  # an owned key the launch leaves out may say this much: it changes nothing


def problems(resolved: Resolved) -> list[str]:
    """Every problem with the user's DeepSpeed settings and accelerate options (the rules report
    them with their own)."""
    spec = resolved.spec
    found = accelerate_problems(spec.accelerate)
    given = [flag for flag, value in (("--ds", spec.deepspeed), ("--ds-config", spec.ds_config)) if value]
    if not given:
        return found
    if not resolved.uses_deepspeed:
        return [
            *found,
            f"{' and '.join(given)} apply to DeepSpeed runs only (this is --zero 0, plain DDP); "
            "add --zero 1, 2 or 3, or drop them",
        ]
    base = spec_config(resolved)
    return found + file_problems(spec, base) + flag_problems(spec.deepspeed, base)


# ---------------------------------------------------------------- --ds and deepspeed:


def flag_problems(settings: tuple[str, ...], base: dict[str, Any]) -> list[str]:
    """``--ds`` settings (a job YAML's ``deepspeed:`` is flattened into the same): well formed, not
    owned, in a section that exists as one, and of the type DeepSpeed expects."""
    out = []
    for setting in settings:
        pair = split(setting)
        if pair is None:
            out.append(
                f"--ds {clip(setting)}: expected KEY=VALUE, KEY a dotted path into the DeepSpeed JSON, "
                "e.g. --ds zero_optimization.overlap_comm=false"
            )
            continue
        for key, value in leaf_items(pair[0], parse_value(pair[1])):
            out += setting_problems(key, value, f"--ds {clip(setting)}", base)
    return out


def setting_problems(key: str, value: Any, label: str, base: dict[str, Any]) -> list[str]:
    owned = owner(key)
    if owned is not None:
        return [f"{label}: ftlaunch sets {owned}; use {how(owned, key, value)} instead"]
    shape = shape_problem(key, base)
    if shape is not None:
        return [f"{label}: {shape}"]
    return type_problems(key, value, label)


def type_problems(key: str, value: Any, label: str, in_file: bool = False) -> list[str]:
    _, needed = typed(key, value)
    if needed is None:
        return []
    fix = ""
    if isinstance(value, str) and typed(key, parse_value(value))[1] is None and parse_value(value) != value:
        fix = f"; write it unquoted: {value if in_file else f'{key}={value}'}"
    return [f"{label}: {what(value)}, but DeepSpeed needs {needed} here{fix}"]


def shape_problem(key: str, base: dict[str, Any]) -> str | None:
    """A setting may not use one of ftlaunch's values as a section. (A section replaced by a value
    is always an owned one: every section ftlaunch renders holds an owned key.)"""
    parts = key.split(".")
    for end in range(1, len(parts)):
        above = ".".join(parts[:end])
        found, there = lookup(base, above)
        if found and not isinstance(there, dict):
            return f"{above} is a value in the DeepSpeed config, not a section"
    return None


def how(owned: str, key: str, value: Any) -> str:
    """The ftlaunch way to set an owned key, with the user's value where it fits."""
    return OWNED[owned].replace("{}", shown(value) if key == owned else "VALUE")


def shown(value: Any) -> str:
    return clip(value if isinstance(value, str) else json.dumps(value))


# ---------------------------------------------------------------- --ds-config


def file_problems(spec: LaunchSpec, base: dict[str, Any]) -> list[str]:
    """Lint a user's DeepSpeed JSON against the launch: owned keys must agree (or say "auto"),
    types must be DeepSpeed's."""
    name = clip(spec.ds_config or "--ds-config")
    out = []
    for key, _, value in parsed(spec.ds_config_settings):
        label = f'"{key}": {clip(json.dumps(value))} in {name}'
        typing_problems = type_problems(key, value, label, in_file=True)
        owned = owner(key)
        if typing_problems:
            out += typing_problems
        elif owned is not None:
            out += owned_in_file(key, owned, value, base, label, name)
        else:
            shape = shape_problem(key, base)
            out += [f"{label}: {shape}"] if shape else []
    return out


def owned_in_file(key: str, owned: str, value: Any, base: dict[str, Any], label: str, name: str) -> list[str]:
    found, decided = lookup(base, key)
    if value == "auto" or (found and decided == value) or (not found and value in NOTHING):
        return []
    if not found or decided == "auto":  # the launch left it to the recipe, or does not use it
        return [f"{label}: set it with {how(owned, key, value)}"]
    return [
        f"{label} conflicts with {shown(decided)} from the launch; drop it from {name}, "
        f"or set it with {how(owned, key, value)}"
    ]


# ---------------------------------------------------------------- --accelerate


def accelerate_problems(options: tuple[str, ...]) -> list[str]:
    out = []
    for setting in options:
        name = option_name(setting.partition("=")[0])
        if not OPTION.fullmatch(name):
            out.append(
                f"--accelerate {clip(setting)}: expected KEY=VALUE (or KEY for a switch), KEY an "
                "'accelerate launch' option, e.g. --accelerate dynamo_backend=no"
            )
        elif name in OWNED_OPTIONS:
            out.append(f"--accelerate {clip(setting)}: ftlaunch sets {name}; use {OWNED_OPTIONS[name]}")
    return out
