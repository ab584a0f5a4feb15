"""The one launch flow, shared by a new launch, ``resume`` and ``--resume auto``: plan the attempt
with its backend, print it for ``--dry-run`` or write it to the run folder and submit that same
plan, then follow the job to its verdict. What the dry run prints is what runs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from launcher import redact
from launcher.backends import backend_for, make_plan
from launcher.errors import SpecError
from launcher.machine import preflight
from launcher.records import resume, rundir, runs
from launcher.records.restarts import Restart, restart_after
from launcher.render import json_text
from launcher.rules.interval import policy_of
from launcher.rules.resume import batch_change
from launcher.run import tree
from launcher.spec import faults
from launcher.spec.decided import Resolved
from launcher.spec.launchspec import LaunchSpec, merge, to_dict

if TYPE_CHECKING:
    from launcher.backends.base import Job, Plan


def execute(
    resolved: Resolved,
    run_dir: Callable[[], Path],
    attempt: int,
    dry_run: bool,
    wait: bool,
    restart: Restart | None = None,
) -> int:
    """The one flow after deciding: plan, then print it, or write it and hand it to the backend.
    ``run_dir`` is called only once nothing can refuse any more, so a refusal leaves no folder.
    A local attempt that hung, lost a rank or crashed is followed by the next one, from the latest
    complete checkpoint, while ``--max-restarts`` allows (``restart`` says which one this is)."""
    backend = backend_for(resolved)
    refusals, notes = recipe_findings(resolved)
    problems = backend.problems(resolved) + refusals
    if dry_run:
        the_plan = make_plan(resolved, run_dir(), attempt, os.getcwd())
        print_dry_run(resolved, the_plan, [f"a real launch here would refuse: {p}" for p in problems] + notes)
        return 0
    for note in notes:
        print(f"ftlaunch: note: {note}", file=sys.stderr)
    from launcher.machine import (
        libcheck,  # DeepSpeed's and accelerate's own checks import torch: never on a dry run
    )

    problems = problems or libcheck.problems(resolved)
    if problems:
        raise SpecError(problems)
    resume.prepare(resolved)
    tree.defer_stop_signals()  # from here an interruption is recorded in the run folder, not half-done
    try:
        the_plan = make_plan(resolved, run_dir(), attempt, os.getcwd())
        write_plan(the_plan, resolved)
        if restart is not None:
            rundir.update_status(the_plan.attempt_dir, restart=restart.number, cause=restart.cause)
        print(f"ftlaunch: run folder {the_plan.run_dir} (attempt {attempt})", file=sys.stderr)
        job = backend.submit(the_plan)  # the local supervisor takes the signals over once it owns the tree
    finally:
        tree.release_stop_signals()
    code = follow(job, the_plan, wait=wait)
    if the_plan.backend != "local":
        return code
    return go_on(the_plan.run_dir, resolved, attempt, code)


def go_on(run_dir: Path, resolved: Resolved, attempt: int, code: int) -> int:
    """Restart after a hang, a lost rank or a crash, from the latest complete checkpoint, on the
    same topology; the run's batch comes from the checkpoint, as with ``ftlaunch resume``."""
    restart, why_not = restart_after(run_dir, attempt, resolved.spec.faults.max_restarts)
    if restart is None:
        if why_not:
            print(f"ftlaunch: {why_not}", file=sys.stderr)
        return code
    limit = resolved.spec.faults.max_restarts
    print(f"ftlaunch: restart {restart.number}/{limit} after {restart.cause}", file=sys.stderr)
    spec = merge(resolved.spec, {"batch.micro": None, "batch.grad_accum": None, "batch.global_batch": None})
    try:
        return continue_run(run_dir, spec, dry_run=False, wait=True, restart=restart)
    except SpecError as err:  # no complete checkpoint yet, or the machine refuses now
        print(f"ftlaunch: not restarted: {err.render().removeprefix('ftlaunch: ')}", file=sys.stderr)
        return code


def recipe_findings(resolved: Resolved) -> tuple[list[str], list[str]]:
    """The pre-flight of the recipe (``machine/preflight.py``): what would crash every rank, and notes."""
    spec = resolved.spec
    assert spec.recipe is not None
    offload = spec.zero.offload_optimizer != "none"
    where = preflight.where_for(spec.topology.on_cpu, spec.slurm.enabled, offload)
    return preflight.findings(spec.recipe, spec.args, where)


def continue_run(
    run_dir: Path, spec: LaunchSpec, dry_run: bool, wait: bool, restart: Restart | None = None
) -> int:
    """A new attempt of ``run_dir`` from its latest complete checkpoint, on ``spec``'s topology."""
    missing = redact.missing(spec.args, os.environ)
    if missing:
        raise SpecError(missing)
    resolved, warnings = resume.decide(run_dir, spec)
    for warning in warnings:
        print(f"ftlaunch: {warning}", file=sys.stderr)
    assert resolved.resume is not None
    change = batch_change(resolved.batch, resolved.resume.saved_global_batch, resolved.resume.step)
    if change:
        print(f"ftlaunch: warning: {change}", file=sys.stderr)
    moved = resolved.resume.universal
    print(
        f"ftlaunch: resuming {run_dir.name} from {Path(resolved.resume.checkpoint).name}"
        f" ({resolved.batch.describe()}{'; universal checkpoint, world size changed' if moved else ''})",
        file=sys.stderr,
    )
    attempt = max(rundir.attempt_numbers(run_dir), default=0) + 1
    return execute(resolved, lambda: run_dir, attempt, dry_run, wait, restart)


def write_plan(the_plan: Plan, resolved: Resolved) -> None:
    """The edge where a plan becomes files: the run's spec and record, then the attempt."""
    run_dir = the_plan.run_dir
    if not (run_dir / rundir.SPEC).exists():
        rundir.write_json(run_dir / rundir.SPEC, to_dict(resolved.spec))
        rundir.write_json(
            run_dir / rundir.RUN,
            {"name": run_dir.name, "backend": the_plan.backend, "created": time.time(), "job_ids": []},
        )
    attempt_dir = rundir.write_attempt(run_dir, the_plan.attempt, the_plan.files())
    rundir.write_json(attempt_dir / rundir.HOST_ENV, redact.recorded_env(os.environ))
    from launcher.machine import envreport

    facts = envreport.at_launch(the_plan.cwd, the_plan.resolved.spec.recipe, the_plan.backend)
    rundir.write_json(attempt_dir / rundir.ENVIRONMENT, facts)


def follow(job: Job, the_plan: Plan, wait: bool) -> int:
    """Report the outcome (local), or the job id (SLURM), following the job with ``--wait``."""
    if the_plan.backend == "slurm" and not wait:
        print(
            f"ftlaunch: submitted SLURM job {job.job_id}; follow it with: ftlaunch status "
            f"{the_plan.run_dir}  |  ftlaunch logs {the_plan.run_dir} --follow",
            file=sys.stderr,
        )
        return 0
    code = job.wait()
    run = runs.read_run(the_plan.run_dir)
    status = run.latest.status if run.latest else {}
    said = "cancelled" if run.run.get("cancelled") else status.get("message", status.get("state"))
    print(f"ftlaunch: {said}. Run folder: {the_plan.run_dir}", file=sys.stderr)
    for line in job.report():
        print(line, file=sys.stderr)
    return code


def print_dry_run(resolved: Resolved, the_plan: Plan, notes: list[str]) -> None:
    spec = resolved.spec
    print(f"# effective: {resolved.batch.describe()}")
    how = ["plain DDP"] if spec.zero.stage == 0 else []
    how += ["chosen by --zero auto"] if resolved.zero_auto else []
    described = f" ({', '.join(how)})" if how else ""
    print(
        f"# precision: {spec.precision or 'from the recipe'}, zero stage: {spec.zero.stage}{described}, "
        f"world size: {resolved.world_size}"
    )
    for line in resolved.zero_auto.reason if resolved.zero_auto else ():
        print(f"# zero auto: {line}")
    print(f"# faults: {faults.describe(spec)}")
    policy = policy_of(spec)
    if policy is not None:
        print(f"# checkpoints: {policy.describe()}")
    print(f"# backend: {the_plan.backend}, nodes: {spec.topology.nodes} x {the_plan.per_node} processes")
    for note in notes:
        print(f"# note: {note}")
    print(f"# run folder: {the_plan.run_dir}")
    prefix = f"{the_plan.attempt_dir}/"
    files = the_plan.files()
    files.pop(rundir.PLAN)
    command = files.pop(rundir.COMMAND)
    print_texts(files, prefix)
    print(
        f"# also written at launch: {rundir.PLAN} (this plan as JSON), {rundir.HOST_ENV} (this "
        "shell's relevant variables, secrets dropped)"
    )
    if the_plan.slurm is not None:
        print("# --- submitit parameters (SlurmExecutor)")
        print(json_text(dict(the_plan.slurm)), end="")
        print("# --- sbatch script (submitit writes and submits it)")
        print(the_plan.sbatch or "", end="" if (the_plan.sbatch or "").endswith("\n") else "\n")
    print(f"# command: {prefix}{rundir.COMMAND} (one node's)")
    print(command, end="")


def print_texts(files: dict[str, str], prefix: str = "") -> None:
    for name, text in files.items():
        print(f"# --- {prefix}{name}")
        print(text, end="")
