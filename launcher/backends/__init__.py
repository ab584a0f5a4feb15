"""Backends turn a resolved spec into running processes: ``plan`` is pure, ``run`` does the work."""

from __future__ import annotations

from pathlib import Path

from launcher.backends.base import Backend, Plan, rendered_for
from launcher.spec.decided import Resolved


def backend_for(resolved: Resolved) -> Backend:
    """The local backend, or SLURM's with ``--slurm``; imported here so the CLI stays light."""
    if resolved.spec.slurm.enabled:
        from launcher.backends import slurm

        return slurm
    from launcher.backends import local

    return local


def make_plan(resolved: Resolved, run_dir: Path, attempt: int, cwd: str) -> Plan:
    """Render the attempt's files and let its backend plan them. Pure and deterministic: a requeued
    SLURM node plans its new attempt the same way and gets the plan the dry run would print."""
    rendered = rendered_for(resolved, run_dir, attempt)
    return backend_for(resolved).plan(resolved, rendered, run_dir, attempt, cwd)
