"""``ftlaunch cancel RUN``: stop a run's newest attempt, local (its launcher's process tree) or
SLURM (``scancel`` through submitit), and record it as cancelled."""

from __future__ import annotations

import argparse
import os
import signal
import time

from launcher.backends.slurm_jobs import ACTIVE_SLURM
from launcher.cli.flags import locate, runs_dir_flag
from launcher.errors import Parser
from launcher.records import rundir, runs

# ---------------------------------------------------------------- cancel


def cancel(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch cancel",
        description="Stop a run: cancel its SLURM job, or end a local run that is still going.",
        epilog="example:\n  ftlaunch cancel RUN",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="a run folder, or its name (a unique prefix will do)")
    runs_dir_flag(parser)
    ns = parser.parse_args(argv)
    run = runs.read_run(locate(ns.runs_dir, ns.run))
    backend = run.latest.status.get("backend") if run.latest else None  # a resume may have moved it
    if (backend or run.run.get("backend")) == "slurm":
        return cancel_slurm(run)
    return cancel_local(run)


def cancel_slurm(run: runs.RunInfo) -> int:
    from launcher.backends import slurm_jobs

    live = [job for job, state in slurm_jobs.states(run.job_ids).items() if state in ACTIVE_SLURM]
    if not live:
        print(f"ftlaunch: {run.path.name} has no queued or running SLURM job; nothing to cancel")
        return 0
    # Recorded first: a node that sees its ranks end must not take the cancel for a fault to requeue.
    rundir.update_json(run.path / rundir.RUN, cancelled=True, cancelled_at=time.time())
    for job in live:
        slurm_jobs.cancel(run.path, job)
    print(f"ftlaunch: cancelled SLURM job {', '.join(live)} of {run.path.name}")
    return 0


def cancel_local(run: runs.RunInfo) -> int:
    latest = run.latest
    pid = latest.status.get("launcher_pid") if latest else None
    if latest is None or latest.state != "running" or not isinstance(pid, int):
        print(f"ftlaunch: {run.path.name} is not running ({run.state}); nothing to cancel")
        return 0
    os.kill(pid, signal.SIGTERM)  # the node supervisor ends its whole process tree
    rundir.update_json(run.path / rundir.RUN, cancelled=True, cancelled_at=time.time())
    print(f"ftlaunch: stopping {run.path.name} (launcher pid {pid})")
    return 0
