"""``KEY=VALUE`` settings passed through to another program's config, written one way everywhere.

A setting is kept as the text the user wrote, ``dotted.key=VALUE``, so the spec holds strings only
(frozen, hashable, and ``spec.json`` shows what was typed). VALUE is read as JSON (``true``,
``5e8``, ``null``, ``"quoted"``, ``{...}``); text that is not JSON is the plain string (``fp32``).
A job YAML's mapping, read without implicit typing, is flattened into the same form, so
``deepspeed: {zero_optimization: {overlap_comm: false}}`` and ``--ds zero_optimization.overlap_comm=false``
are one setting, parsed by one function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn


def parse_value(text: str) -> Any:
    """JSON if it is JSON, else the text itself. NaN and infinity are text: DeepSpeed's JSON
    cannot hold them, so the type check refuses them by name."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # RecursionError: '[[[[...' nested deeper than Python goes
        return text
    return text if isinstance(value, float) and value in (float("inf"), float("-inf")) else value


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(name)


def split(setting: str) -> tuple[str, str] | None:
    """``(key, value text)``, or None when ``setting`` is not ``dotted.key=VALUE``."""
    key, sep, text = setting.partition("=")
    if not sep or not all(part and part == part.strip() for part in key.split(".")):
        return None
    return key, text


def leaf_items(key: str, value: Any) -> list[tuple[str, Any]]:
    """An object value as the settings of its leaves (``a={"b": 1}`` is ``a.b=1``), so an object
    is merged into a section rather than replacing it, and every leaf is checked alone."""
    if isinstance(value, dict) and value:
        return [item for k, v in value.items() for item in leaf_items(f"{key}.{k}", v)]
    return [(key, value)]


def parsed(settings: tuple[str, ...]) -> list[tuple[str, str, Any]]:
    """``(leaf key, the setting as written, value)`` for every well-formed setting, in order."""
    out = []
    for setting in settings:
        pair = split(setting)
        if pair is not None:
            out += [(key, setting, value) for key, value in leaf_items(pair[0], parse_value(pair[1]))]
    return out


def from_yaml(data: Mapping[Any, Any], prefix: str = "") -> tuple[str, ...]:
    """A job YAML mapping as settings. Scalars keep the text YAML read (so they parse exactly as
    the same text given on the command line); a list becomes JSON, each item parsed the same way."""
    out: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += from_yaml(value, f"{dotted}.")
        elif isinstance(value, str):
            out.append(f"{dotted}={value}")
        else:
            out.append(f"{dotted}={json.dumps(_yaml_value(value))}")
    return tuple(out)


def _yaml_value(value: Any) -> Any:
    if isinstance(value, str):
        return parse_value(value)
    if isinstance(value, Mapping):
        return {str(k): _yaml_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_value(v) for v in value]
    return value


def from_json(data: Mapping[str, Any]) -> tuple[str, ...]:
    """A JSON object (a DeepSpeed config file) as settings: exact JSON values, a string stays one."""
    return tuple(f"{key}={json.dumps(value)}" for key, value in leaf_items_of(data))


def leaf_items_of(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [item for key, value in data.items() for item in leaf_items(str(key), value)]


def lookup(config: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted key in a nested mapping."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def put(config: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key, creating its sections; an empty object never empties a section."""
    *path, last = key.split(".")
    node = config
    for part in path:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if value == {} and isinstance(node.get(last), dict):
        return
    node[last] = value
