"""Flags shared by the subcommands: the spec flags (launch, resume, configs), ``--runs-dir`` with
locating a run by name, and ``--metric``."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.errors import SpecError
from launcher.records import runs
from launcher.spec import jobfile
from launcher.spec.launchspec import LaunchSpec, clip, coerce, leaves, merge, value_at

# ---------------------------------------------------------------- parsing


class Once(argparse.Action):
    """A flag that takes one value and may be given once: a repeated ``--job`` or ``--zero`` would
    otherwise silently drop the first value."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, option: str | None = None
    ) -> None:
        previous = getattr(ns, self.dest, None)
        if previous is not None:
            raise SpecError(
                [f"{option} given twice ({clip(str(previous))} and {clip(str(value))}); give it once"]
            )
        setattr(ns, self.dest, value)


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per spec value, with the help text declared on the spec field."""
    parser.add_argument(
        "--job", metavar="FILE", action=Once, help="a job YAML; command-line flags override it"
    )
    group = parser.add_argument_group("launch spec")
    for leaf in leaves():
        if not leaf.flag.startswith("--"):
            continue
        if leaf.hint is bool:  # a switch; "true" is coerced like a YAML value
            group.add_argument(leaf.flag, dest=leaf.key, action="store_const", const="true", help=leaf.help)
            continue
        metavar = leaf.field.metadata.get("metavar") or leaf.key.split(".")[-1].upper()
        action = "append" if typing.get_origin(leaf.hint) is tuple else Once
        group.add_argument(leaf.flag, dest=leaf.key, metavar=metavar, help=leaf.help, action=action)


def spec_from_args(
    ns: argparse.Namespace, recipe: str | None, recipe_args: Sequence[str], base: LaunchSpec | None = None
) -> LaunchSpec:
    """YAML first (if any), then every flag the user typed on top; all problems reported together.
    Settings flags (``--ds``, ``--accelerate``) add to the YAML's, the later winning per key. A
    ``--ds-config`` named by this command is read here, so the spec records what it held."""
    base = jobfile.load(ns.job) if ns.job else (base or LaunchSpec())
    problems: list[str] = []
    overrides: dict[str, Any] = {}
    for leaf in leaves():
        raw = getattr(ns, leaf.key, None)
        if raw is not None:
            overrides[leaf.key] = coerce(leaf.hint, raw, leaf.flag, problems)
            if leaf.field.metadata.get("settings") and overrides[leaf.key] is not None:
                overrides[leaf.key] = value_at(base, leaf.key) + overrides[leaf.key]  # flags win per key
    if recipe is not None:
        overrides["recipe"] = recipe
        overrides["args"] = tuple(recipe_args)
    if problems:
        raise SpecError(problems)
    spec = merge(base, overrides)
    if spec.ds_config is not None and (ns.job or "ds_config" in overrides):  # named now: read it now
        spec = merge(spec, {"ds_config_settings": jobfile.read_ds_config(spec.ds_config)})
    return spec


def runs_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="where run folders live (default: runs)")


def locate(runs_dir: str, name: str) -> Path:
    try:
        return runs.find_run(runs_dir, name)
    except LookupError as err:
        raise SpecError([f"{err}; list runs with: ftlaunch status --runs-dir {runs_dir}"]) from None


def metric_flag(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--metric", action="append", metavar="KEY", help=text)
