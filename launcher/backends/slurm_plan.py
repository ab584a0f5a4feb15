"""The SLURM plan: submitit's parameters and the sbatch script they make, decided before anything
is submitted, so ``--dry-run`` prints the script that will run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from launcher.backends.base import HEAD, NODE_RANK, PORT, Plan, node_command
from launcher.records import rundir
from launcher.render import Rendered, attempt_texts
from launcher.rules.validate import time_minutes
from launcher.spec.decided import Resolved

NAME = "slurm"


DEFAULT_TIME_MIN = 24 * 60  # submitit would otherwise ask for 5 minutes


# Spec field of the `slurm` section -> submitit's SlurmExecutor parameter (the one table).
PARAMETERS = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "exclude": "exclude",
    "cpus_per_task": "cpus_per_task",
    "exclusive": "exclusive",
    "setup": "setup",
}


def submitit_parameters(resolved: Resolved, job_name: str) -> dict[str, Any]:
    spec = resolved.spec
    s = spec.slurm
    params: dict[str, Any] = {"job_name": job_name, "nodes": spec.topology.nodes, "ntasks_per_node": 1}
    params["time"] = time_minutes(s.time) if s.time else DEFAULT_TIME_MIN
    if spec.topology.gpus is not None:
        params["gpus_per_node"] = spec.topology.gpus
    for field_name, parameter in PARAMETERS.items():
        value = getattr(s, field_name)
        if value not in (None, (), False):
            params[parameter] = list(value) if isinstance(value, tuple) else value
    extra = dict(option.split("=", 1) for option in s.sbatch)
    if s.mem is not None:
        extra["mem"] = s.mem  # submitit's own `mem` takes gigabytes as a number
    if extra:
        params["additional_parameters"] = {k.strip().lstrip("-"): v for k, v in extra.items()}
    return params


def submitit_folder(run_dir: Path, cwd: str) -> Path:
    """Absolute, as submitit makes it, so the planned sbatch text is the submitted one."""
    return (Path(cwd) / run_dir / rundir.SLURM).absolute()


def sbatch_text(folder: Path, params: dict[str, Any]) -> str:
    """The script ``SlurmExecutor`` writes for these parameters (its own function and command)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return str(_make_sbatch_string(command=command, folder=folder, **params))


def plan(resolved: Resolved, rendered: Rendered, run_dir: Path, attempt: int, cwd: str) -> Plan:
    attempt_dir = rundir.attempt_path(run_dir, attempt)
    machine = ["--machine_rank", NODE_RANK, "--main_process_ip", HEAD, "--main_process_port", PORT]
    params = submitit_parameters(resolved, run_dir.name)
    return Plan(
        backend=NAME,
        run_dir=run_dir,
        attempt=attempt,
        cwd=cwd,
        argv=node_command(resolved, attempt_dir, machine),
        env=rendered.env,
        rendered=attempt_texts(rendered),
        world_size=resolved.world_size,
        per_node=resolved.spec.topology.per_node,
        resolved=resolved,
        slurm=params,
        sbatch=sbatch_text(submitit_folder(run_dir, cwd), params),
    )
