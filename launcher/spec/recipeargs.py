"""Reading a recipe's own arguments the way its ``HfArgumentParser`` will: the rules, ``--zero auto``
and the pre-launch checks all look at the same values."""

from __future__ import annotations

from collections.abc import Sequence


def parse_flags(args: Sequence[str]) -> dict[str, list[str]]:
    """``--name value...`` / ``--name=value`` pairs as an argument parser would see them; after a
    bare ``--`` nothing is a flag."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            current = found.setdefault(name, [])
            if eq:
                current.append(value)
                current = None
        elif current is not None:
            current.append(arg)
    return found


def recipe_flag_value(args: tuple[str, ...], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in the recipe's arguments (last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def flag_given(args: tuple[str, ...], flag: str) -> bool:
    """``--flag`` or ``--flag=...`` is among the arguments, with or without a value."""
    return flag in args or any(a.startswith(flag + "=") for a in args)


def recipe_flag_true(args: tuple[str, ...], flag: str) -> bool:
    """HfArgumentParser booleans: ``--flag``, ``--flag true`` or ``--flag=True`` all switch it on."""
    if not flag_given(args, flag):
        return False
    value = recipe_flag_value(args, flag)
    return value is None or value.lower() in ("true", "1", "yes")
