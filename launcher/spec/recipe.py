"""The recipe and its arguments: where ftlaunch's flags end, and that the recipe is runnable.

The rule: ftlaunch's flags go before the recipe and everything after it goes to the recipe,
verbatim. One of ftlaunch's own flags after the recipe is refused rather than silently handed to
the recipe (``recipe.py --dry-run`` would otherwise launch for real); a ``--`` right after the
recipe says the recipe takes it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from launcher.errors import SpecError
from launcher.spec.launchspec import LaunchSpec, clip


def split_at_recipe(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """ftlaunch's flags go before the recipe; everything after it goes to the recipe, unchanged.

    Split there ourselves (argparse drops a ``--``, so it cannot tell ``recipe.py -- --x`` from
    ``recipe.py --x``). Returns (ftlaunch's part including the recipe, the recipe's arguments)."""
    takes_value = {o for a in parser._actions if a.nargs is None for o in a.option_strings}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return argv[: i + 2], argv[i + 2 :]
        if not token.startswith("-") or token == "-":
            return argv[: i + 1], argv[i + 1 :]
        i += 2 if token in takes_value else 1
    return argv, []


def recipe_args_of(parser: argparse.ArgumentParser, recipe: str, rest: list[str]) -> list[str]:
    """The recipe's arguments. One of ftlaunch's own flags among them is almost surely misplaced
    (``recipe.py --dry-run`` would launch for real), so it is refused unless a ``--`` right after
    the recipe says the recipe takes it."""
    if rest[:1] == ["--"]:
        return rest[1:]
    ours = {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}
    misplaced = list(dict.fromkeys(a.split("=", 1)[0] for a in rest if a.split("=", 1)[0] in ours))
    if misplaced:
        flags = " ".join(misplaced)
        raise SpecError(
            [
                f"{flags} after the recipe {clip(recipe)} would go to the recipe, not to ftlaunch.\n"
                f"  Put ftlaunch's flags before the recipe: ftlaunch {flags} ... {clip(recipe)} ...\n"
                f"  If the recipe takes {misplaced[0]} itself, give them after --: {clip(recipe)} -- ..."
            ]
        )
    return rest


JOB_SUFFIXES = (".yaml", ".yml", ".json")


def check_recipe(spec: LaunchSpec) -> None:
    """The recipe must be a readable Python script; a job file given as the recipe (``--job``
    forgotten) is named as such rather than run and left to die with a NameError."""
    if spec.recipe is None:
        raise SpecError(["no recipe given: ftlaunch [flags] RECIPE.py [recipe args] (see ftlaunch --help)"])
    shown = clip(spec.recipe)
    if "\0" in spec.recipe:
        raise SpecError([f"recipe {shown!r}: contains a NUL byte"])
    recipe = Path(spec.recipe)
    if recipe.suffix.lower() in JOB_SUFFIXES:
        raise SpecError([f"{shown} is a job file, not a recipe: use ftlaunch --job {shown} [flags]"])
    if spec.recipe.startswith("-"):
        raise SpecError([f"recipe {shown}: a name starting with '-' reads as a flag; give it as ./{shown}"])
    if not recipe.exists():
        raise SpecError([f"recipe {shown}: no such file (paths are relative to {clip(str(Path.cwd()))})"])
    if not recipe.is_file():
        raise SpecError([f"recipe {shown}: not a file"])
    if recipe.suffix != ".py":
        raise SpecError([f"recipe {shown}: not a Python script (a recipe is a .py file)"])
    if not os.access(recipe, os.R_OK):
        raise SpecError([f"recipe {shown}: cannot be read (permission denied); check its permissions"])
