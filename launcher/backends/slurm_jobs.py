"""SLURM job control without submitit: the jobs' states (``sacct``), requeue and cancel."""

from __future__ import annotations

import subprocess
from pathlib import Path

from launcher.records import rundir

# ---------------------------------------------------------------- job control, no submitit import


def states(job_ids: list[str]) -> dict[str, str]:
    """SLURM's state of each job (``sacct``; queued jobs may only show in ``squeue``)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        found[job_id.strip()] = state.split()[0] if state.strip() else "UNKNOWN"
    return found


def requeue(job_id: str) -> None:
    """What submitit does on a time-out signal (``scontrol requeue``), for a job whose ranks saved
    and stopped before the limit on their own."""
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, timeout=60)


def cancel(run_dir: Path, job_id: str) -> None:
    import submitit

    submitit.SlurmJob(folder=run_dir / rundir.SLURM, job_id=job_id).cancel(check=True)


ACTIVE_SLURM = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING"}
