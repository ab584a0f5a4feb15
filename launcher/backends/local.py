"""Local backend: one node supervisor on this machine, in the launching process.

``plan`` is pure: the accelerate command for a single node, with port 0 so torchrun's store picks a
free port itself (the plan is then the same in ``--dry-run`` and in the launch). ``submit`` runs the
node supervisor to the end (the console follows the run) and returns the finished job.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.backends.base import Plan, node_command
from launcher.machine import opcache
from launcher.machine.hardware import hardware_problems
from launcher.records import rundir
from launcher.records.verdict import Verdict, record_verdict
from launcher.render import Rendered, attempt_texts
from launcher.run import supervisor
from launcher.spec.decided import Resolved
from launcher.spec.faults import hang_timeout

NAME = "local"


def plan(resolved: Resolved, rendered: Rendered, run_dir: Path, attempt: int, cwd: str) -> Plan:
    attempt_dir = rundir.attempt_path(run_dir, attempt)
    return Plan(
        backend=NAME,
        run_dir=run_dir,
        attempt=attempt,
        cwd=cwd,
        argv=node_command(resolved, attempt_dir, ["--main_process_port", "0"]),
        env=rendered.env,
        rendered=attempt_texts(rendered),
        resolved=resolved,
        world_size=resolved.world_size,
        per_node=resolved.spec.topology.per_node,
    )


def problems(resolved: Resolved) -> list[str]:
    from launcher.machine.hardware import probe

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

    verdict: Verdict
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
    verdict = supervisor.supervise(
        the_plan.argv,
        the_plan.env,
        the_plan.cwd,
        attempt_dir,
        node_rank=0,
        world_size=the_plan.world_size,
        own_signals=True,
        hang_timeout=hang_timeout(the_plan.resolved.spec),
    )
    record_verdict(attempt_dir, verdict)
    return LocalJob(verdict)
