"""``ftlaunch``: parse, validate, render, then hand over to a backend.

Imports nothing heavy: ``--help`` and ``--dry-run`` never load torch, transformers, trl, deepspeed
or submitit. Subcommands are recognised as the first word; anything else is the launch form.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from launcher.cli.launch import launch
from launcher.errors import SpecError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        from launcher.machine import envreport

        print(f"ftlaunch {envreport.version()}")
        return 0
    command = COMMANDS.get(args[0]) if args else None
    try:
        return command(args[1:]) if command else launch(args)
    except SpecError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ftlaunch --dry-run ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C before anything was started (a run in progress records it)
        print("\nftlaunch: interrupted", file=sys.stderr)
        return 130


def lazy(module: str, function: str) -> Callable[[list[str]], int]:
    """A subcommand whose module is imported only when it runs: ``--help``, a dry run and a launch
    never pay for another subcommand (plot's matplotlib, estimate's arithmetic, status's readers)."""

    def run(argv: list[str]) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), function)(argv))

    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "configs": lazy("launcher.cli.configs", "configs"),
    "estimate": lazy("launcher.cli.estimate", "estimate_command"),
    "status": lazy("launcher.cli.status", "status"),
    "logs": lazy("launcher.cli.logs", "logs"),
    "cancel": lazy("launcher.cli.cancel", "cancel"),
    "resume": lazy("launcher.cli.resume", "resume_command"),
    "plot": lazy("launcher.cli.plot", "plot_command"),
    "check": lazy("launcher.cli.check", "check_command"),
    "compare": lazy("launcher.cli.compare", "compare_command"),
    "env": lazy("launcher.cli.env", "env_command"),
}
