"""Reading a recipe's own arguments the way its ``HfArgumentParser`` will: the rules, ``--zero auto``
and the pre-launch checks all look at the same values."""

from __future__ import annotations

from collections.abc import Sequence


def occurrences(args: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Each ``--name`` as an argument parser sees it, in order, with the values that follow it:
    ``--name=value`` has one, ``--name v1 v2`` has every token up to the next flag (a list field
    takes them all, a scalar field the first), ``--name`` alone has none. After a bare ``--``
    nothing is a flag. The one tokenizer every reader below uses."""
    found: list[tuple[str, list[str]]] = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            found.append((name, [value] if eq else []))
            if eq:
                found.append(("", []))  # closes it: what follows is not its value
        elif found:
            found[-1][1].append(arg)
    return [(name, values) for name, values in found if name]


def parse_flags(args: Sequence[str]) -> dict[str, list[str]]:
    """Every flag (without its ``--``) with all its values, repeated flags' values together."""
    merged: dict[str, list[str]] = {}
    for name, values in occurrences(args):
        merged.setdefault(name, []).extend(values)
    return merged


def recipe_flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in the recipe's arguments (the last one
    given wins, as with argparse); None when it is absent or given without a value."""
    values = [v for name, v in occurrences(args) if f"--{name}" == flag and v]
    return values[-1][0] if values else None


def flag_given(args: Sequence[str], flag: str) -> bool:
    """``--flag`` or ``--flag=...`` is among the arguments, with or without a value."""
    return any(f"--{name}" == flag for name, _ in occurrences(args))


def recipe_flag_true(args: Sequence[str], flag: str) -> bool:
    """HfArgumentParser booleans: ``--flag``, ``--flag true`` or ``--flag=True`` all switch it on."""
    if not flag_given(args, flag):
        return False
    value = recipe_flag_value(args, flag)
    return value is None or value.lower() in ("true", "1", "yes")
