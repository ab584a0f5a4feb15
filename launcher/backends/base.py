"""The seam between deciding a launch and running it.

A backend turns the rendered files of an attempt into a ``Plan`` (pure: the exact per-node command,
its environment and, for SLURM, submitit's parameters and sbatch text) and later executes that same
plan (``submit``), returning a ``Job``. ``--dry-run`` prints the plan; a real launch writes
``plan.files`` and hands the plan to ``submit``: one object, so what is printed is what runs.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from launcher.protocol import ENTRY_MODULE
from launcher.records import rundir
from launcher.render import ACCELERATE_FILE, DEEPSPEED_FILE, Rendered, render_all
from launcher.render.accelerate import accelerate_options
from launcher.spec.decided import Resolved

# Tokens of a per-node command that only the node itself can fill in (SLURM): replaced whole, never
# by string formatting, and only in the launcher's part of the command (see ``Plan.recipe_at``).
NODE_RANK = "{node_rank}"


HEAD = "{head}"


PORT = "{port}"


# How command.sh spells them for someone re-running a SLURM node's command by hand.
SHELL_SPELLING = {NODE_RANK: "$SLURM_NODEID", HEAD: "$FTLAUNCH_HEAD", PORT: "$FTLAUNCH_PORT"}


@dataclass(frozen=True)
class Plan:
    """Everything a launch will do, decided before anything is written or spawned."""

    backend: str
    run_dir: Path
    attempt: int
    cwd: str
    argv: tuple[str, ...]  # one node's command; SLURM's holds NODE_RANK / HEAD / PORT tokens
    env: Mapping[str, str]
    rendered: Mapping[str, str]  # attempt file name -> text (configs, decided values, env)
    resolved: Resolved  # what the files were rendered from (``decided.json``)
    world_size: int
    per_node: int
    slurm: Mapping[str, Any] | None = None  # submitit's SlurmExecutor parameters
    sbatch: str | None = None  # the script submitit submits for these parameters
    notes: tuple[str, ...] = field(default=())

    @property
    def recipe_at(self) -> int:
        """Where the recipe and its arguments start in ``argv``: nothing from there on is ever
        filled in or re-spelled, whatever it looks like."""
        return len(self.argv) - len(self.resolved.spec.args) - 1

    def node_argv(self, node_rank: int, head: str, port: int) -> list[str]:
        """Fill the node-only tokens of the command (on the node, never at submit time)."""
        values = {NODE_RANK: str(node_rank), HEAD: head, PORT: str(port)}
        cut = self.recipe_at
        return [values.get(a, a) for a in self.argv[:cut]] + list(self.argv[cut:])

    @property
    def attempt_dir(self) -> Path:
        return rundir.attempt_path(self.run_dir, self.attempt)

    def shell_command(self) -> str:
        """The node command as one shell line, each argument quoted: re-running it passes every
        argument through unchanged (spaces, quotes and metacharacters included)."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        cut = self.recipe_at
        words = [SHELL_SPELLING.get(a) or shlex.quote(a) for a in self.argv[:cut]]
        words += [shlex.quote(a) for a in self.argv[cut:]]
        return " ".join([*assignments, *words])

    def command_file(self) -> str:
        lines = ["#!/usr/bin/env bash", f"cd {shlex.quote(self.cwd)}"]
        if self.backend == "slurm":
            lines.insert(1, "# one SLURM node's command; ftlaunch sets the head and port from the job id")
        return "\n".join([*lines, self.shell_command(), ""])

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "attempt": self.attempt,
            "cwd": self.cwd,
            "argv": list(self.argv),
            "env": dict(self.env),
            "world_size": self.world_size,
            "per_node": self.per_node,
            "slurm": dict(self.slurm) if self.slurm is not None else None,
            "sbatch": self.sbatch,
        }

    def files(self) -> dict[str, str]:
        """Every file the attempt starts with: the rendered ones, the plan itself and command.sh."""
        return {
            **self.rendered,
            rundir.PLAN: json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n",
            rundir.COMMAND: self.command_file(),
        }


class Job(Protocol):
    """A submitted attempt: its id and its outcome (job control goes through the run folder)."""

    @property
    def job_id(self) -> str | None: ...

    def wait(self) -> int: ...

    def report(self) -> list[str]:
        """Lines to show under the outcome: the failing rank's last words, a warnings summary."""
        ...


class Backend(Protocol):
    NAME: str

    def problems(self, resolved: Resolved) -> list[str]: ...

    def plan(self, resolved: Resolved, rendered: Rendered, run_dir: Path, attempt: int, cwd: str) -> Plan: ...

    def submit(self, plan: Plan, /) -> Job: ...


def rendered_for(resolved: Resolved, run_dir: Path, attempt: int) -> Rendered:
    """The attempt's files, with the DeepSpeed config's path inside the attempt's folder."""
    attempt_dir = rundir.attempt_path(run_dir, attempt)
    return render_all(resolved, deepspeed_path=str(attempt_dir / DEEPSPEED_FILE))


def node_command(resolved: Resolved, attempt_dir: Path, machine: list[str]) -> tuple[str, ...]:
    """``accelerate launch`` of the entry around the recipe, for one node (``machine``: the
    node-specific flags). Shared with the SLURM backend."""
    spec = resolved.spec
    assert spec.recipe is not None
    layout = ["--config_file", str(attempt_dir / ACCELERATE_FILE), *machine]
    # torchrun's tee: the console and per-rank files under logs/torchrun, each line rank-prefixed.
    logs = ["--tee", "3", "--log_dir", str(attempt_dir / rundir.LOGS / "torchrun"), "--role", "rank"]
    entry = ["-m", ENTRY_MODULE, "--attempt-dir", str(attempt_dir), spec.recipe, *spec.args]
    extra = accelerate_options(spec.accelerate)  # the user's (--accelerate), checked by the rules
    return (sys.executable, "-m", "accelerate.commands.launch", *layout, *logs, *extra, *entry)
