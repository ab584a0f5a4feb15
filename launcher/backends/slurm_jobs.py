"""SLURM job control without submitit: the jobs' states (``sacct``), requeue and cancel."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
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


def requeue(job_id: str, exclude: Sequence[str] = ()) -> str:
    """What submitit does on a time-out signal (``scontrol requeue``), for a job whose ranks saved
    and stopped before the limit on their own, or that failed. ``exclude``: nodes the requeued job
    must not run on, added to its own exclusions; SLURM changes those only while the job pends, so
    right after the requeue. Returns what stopped that, if anything: the job is requeued anyway."""
    scontrol("requeue", job_id)
    if not exclude:
        return ""
    try:
        hosts = sorted({*exclusions(job_id), *exclude})
        scontrol("update", f"JobId={job_id}", f"ExcNodeList={','.join(hosts)}")
    except (OSError, subprocess.SubprocessError) as err:
        return f"requeued without excluding {', '.join(exclude)}: {err}"
    return ""


def scontrol(*argv: str) -> str:
    """``scontrol``, also from inside the job it requeues: SLURM then sends the job's processes
    SIGTERM (SIGKILL ``KillWait`` seconds later), which submitit's task lets pass; this call must
    outlive it too."""
    return subprocess.run(
        ["scontrol", *argv],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
    ).stdout


def job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job -o``: one line of Key=Value fields."""
    line = scontrol("show", "job", "-o", job_id)
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


def job_state(job_id: str) -> str:
    """SLURM's state of a job, as its controller has it now (``RUNNING``, ``CANCELLED``, ...);
    empty when it cannot be asked."""
    try:
        return job_fields(job_id).get("JobState", "")
    except (OSError, subprocess.SubprocessError):
        return ""


def exclusions(job_id: str) -> list[str]:
    """The job's excluded nodes, host names expanded (``n[3-4]`` is n3, n4)."""
    listed = job_fields(job_id).get("ExcNodeList", "(null)")
    return [] if listed in ("", "(null)") else scontrol("show", "hostnames", listed).split()


UNUSABLE = ("down", "drain", "drng", "fail", "maint", "inval", "unk", "futr", "plnd")


def usable_nodes(job_id: str) -> set[str]:
    """The nodes of the job's partition that can run jobs now (``sinfo``)."""
    partition = job_fields(job_id).get("Partition", "")
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-p", partition, "-o", "%N %t"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    nodes = (line.split() for line in out.splitlines() if line.strip())
    return {name for name, state in nodes if not state.rstrip("*~#!%$@^-").startswith(UNUSABLE)}


def cancel(run_dir: Path, job_id: str) -> None:
    import submitit

    submitit.SlurmJob(folder=run_dir / rundir.SLURM, job_id=job_id).cancel(check=True)


ACTIVE_SLURM = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING"}
