"""Reading a job YAML strictly: what the file says is what the launch gets, or a clear refusal.

YAML 1.1's implicit typing would change recipe arguments behind the user's back (``010`` becomes
8, ``no`` becomes False, ``1_000`` becomes 1000), so every scalar is read as the string written
and converted by the spec's declared type alone. Duplicate keys are refused rather than letting
the last one win, and aliases are refused outright: job files have no need for them, and they are
how a few hundred bytes of YAML expand into gigabytes ("billion laughs"). The file is bounded too.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NoReturn

import yaml

from launcher.errors import SpecError
from launcher.spec import settings
from launcher.spec.launchspec import LaunchSpec, clip, from_mapping, merge

MAX_BYTES = 1 << 20  # a job file is a few hundred bytes; a megabyte is certainly not one


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with no implicit types (only ``null``/``~``/empty stay None), no duplicate keys,
    no aliases."""

    yaml_implicit_resolvers = {}  # noqa: RUF012 (this class's own table: null only)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not supported in job files", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{clip(str(key))}' appears twice (which one did you mean?)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


def read_text(path: str, flag: str = "--job") -> str:
    file = Path(path)
    try:
        if not file.exists():
            raise SpecError([f"{flag} {clip(path)}: no such file"])
        if not file.is_file():
            raise SpecError([f"{flag} {clip(path)}: not a file"])
        if file.stat().st_size > MAX_BYTES:
            raise SpecError([f"{flag} {clip(path)}: {file.stat().st_size} bytes; the file is at most 1 MiB"])
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(
            [f"{flag} {clip(path)}: not UTF-8 text (byte {err.start}); save it as UTF-8"]
        ) from None
    except OSError as err:
        raise SpecError(
            [f"{flag} {clip(path)}: cannot be read ({err.strerror}); check its permissions"]
        ) from None


def read_ds_config(path: str) -> tuple[str, ...]:
    """A user's DeepSpeed JSON as settings (``spec/settings.py``), to be recorded in the spec.
    Plain JSON, read as strictly as DeepSpeed reads it: a repeated key is an error, not a choice."""
    text = read_text(path, "--ds-config")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise SpecError([f"--ds-config {clip(path)}: not valid JSON: {clip(str(err))}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"--ds-config {clip(path)}: a DeepSpeed config is a JSON object {{...}}"])
    return settings.from_json(data)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key '{clip(repeated[0])}' appears twice (which one did you mean?)")
    return dict(pairs)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def parse(text: str, path: str) -> Any:
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError([f"--job {clip(path)}: not valid YAML{where}: {clip(str(err.problem))}"]) from None
    except yaml.YAMLError as err:
        raise SpecError([f"--job {clip(path)}: not valid YAML: {clip(str(err))}"]) from None


def load(path: str) -> LaunchSpec:
    """The spec a job file describes. A recipe or a ``ds_config`` in it is relative to the job
    file, so ``jobs/*.yaml`` work from anywhere."""
    data = parse(read_text(path), path)
    spec = from_mapping(data if data is not None else {}, path)
    for key in ("recipe", "ds_config"):
        named = getattr(spec, key)
        if named is not None and not Path(named).is_absolute():
            spec = merge(spec, {key: os.path.relpath(Path(path).parent / named)})
    return spec
