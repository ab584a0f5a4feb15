"""Local backend: one node supervisor on this machine, in the launching process.

``plan`` is pure: the accelerate command for a single node, with port 0 so torchrun's store picks a
free port itself (the plan is then the same in ``--dry-run`` and in the launch). ``submit`` runs the
node supervisor to the end (the console follows the run) and returns the finished job.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from launcher import node, opcache, rundir
from launcher.backends.base import Plan
from launcher.render import ACCELERATE_FILE, Rendered, attempt_texts
from launcher.render.accelerate import accelerate_options
from launcher.rules import Resolved, hardware_problems

NAME = "local"


def accelerate_argv(resolved: Resolved, attempt_dir: Path, machine: list[str]) -> tuple[str, ...]:
    """``accelerate launch`` of the entry around the recipe, for one node (``machine``: the
    node-specific flags). Shared with the SLURM backend."""
    spec = resolved.spec
    assert spec.recipe is not None
    layout = ["--config_file", str(attempt_dir / ACCELERATE_FILE), *machine]
    # torchrun's tee: the console and per-rank files under logs/torchrun, each line rank-prefixed.
    logs = ["--tee", "3", "--log_dir", str(attempt_dir / rundir.LOGS / "torchrun"), "--role", "rank"]
    entry = ["-m", "launcher.entry", "--attempt-dir", str(attempt_dir), spec.recipe, *spec.args]
    extra = accelerate_options(spec.accelerate)  # the user's (--accelerate), checked by the rules
    return (sys.executable, "-m", "accelerate.commands.launch", *layout, *logs, *extra, *entry)


def plan(resolved: Resolved, rendered: Rendered, run_dir: Path, attempt: int, cwd: str) -> Plan:
    attempt_dir = rundir.attempt_path(run_dir, attempt)
    return Plan(
        backend=NAME,
        run_dir=run_dir,
        attempt=attempt,
        cwd=cwd,
        argv=accelerate_argv(resolved, attempt_dir, ["--main_process_port", "0"]),
        env=rendered.env,
        rendered=attempt_texts(rendered),
        resolved=resolved,
        world_size=resolved.world_size,
        per_node=resolved.spec.topology.per_node,
    )


def problems(resolved: Resolved) -> list[str]:
    from launcher.hardware import probe

    found = hardware_problems(resolved.spec, probe())
    if resolved.uses_deepspeed:
        found += opcache.launch_problems(os.environ)
    if resolved.spec.topology.nodes > 1:
        found.append(
            f"--nodes {resolved.spec.topology.nodes}: a local launch runs on this machine only; "
            "use --nodes 1, or add --slurm for a multi-node job"
        )
    return found


@dataclass
class LocalJob:
    """A local attempt that has already run (``submit`` blocks while the console follows it)."""

    verdict: node.Verdict
    job_id: str | None = None

    def wait(self) -> int:
        return self.verdict.exit_code

    def report(self) -> list[str]:
        return list(self.verdict.report)


def submit(the_plan: Plan) -> LocalJob:
    attempt_dir = the_plan.attempt_dir
    rundir.update_status(
        attempt_dir,
        state="running",
        backend=NAME,
        launcher_pid=os.getpid(),
        started=time.time(),
        world_size=the_plan.world_size,
    )
    verdict = node.supervise(
        the_plan.argv,
        the_plan.env,
        the_plan.cwd,
        attempt_dir,
        node_rank=0,
        world_size=the_plan.world_size,
        own_signals=True,
    )
    record_verdict(attempt_dir, verdict)
    return LocalJob(verdict)


def record_verdict(attempt_dir: Path, verdict: node.Verdict) -> None:
    """The attempt's final state, with the effective numbers the ranks recorded."""
    effective_path = attempt_dir / rundir.EFFECTIVE
    effective = rundir.read_json(effective_path) if effective_path.exists() else {}
    rundir.update_status(
        attempt_dir,
        state=verdict.state,
        exit_code=verdict.exit_code,
        message=verdict.message,
        ended=time.time(),
        completed_ranks=len(rundir.completed_ranks(attempt_dir)),
        effective=effective.get("summary", ""),
    )
