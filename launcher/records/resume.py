"""Deciding a resume: which checkpoint, on which topology, with which batch. Reads the run folder
and the checkpoints (the edge); the arithmetic and compatibility rules are in ``rules/resume.py``.

Used by ``ftlaunch resume``, by ``--resume auto``, and by every node of a requeued SLURM job, so
the three cannot disagree about where a run continues.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from launcher.errors import SpecError
from launcher.records import rundir, runs
from launcher.rules.resume import resume_spec, same_training_problems
from launcher.rules.validate import validate
from launcher.spec.decided import Resolved, Resume
from launcher.spec.launchspec import LaunchSpec, from_mapping


def resumable_run(spec: LaunchSpec, name: str) -> Path | None:
    """For ``--resume auto``: the newest run of this name that has a complete checkpoint."""
    if spec.name is None:
        raise SpecError(["--resume auto needs --name NAME (the run to continue when it exists)"])
    from launcher.records import checkpoints

    for run in reversed(runs.list_runs(spec.runs_dir)):
        if rundir.read_json(run.path / rundir.SPEC).get("name") == spec.name:
            found, _ = checkpoints.latest_complete(output_dir(run.path))
            if found is not None:
                return run.path
    return None


def output_dir(run_dir: Path) -> Path:
    """Where the run's checkpoints are: what the newest attempt's trainer really used."""
    for number in reversed(rundir.attempt_numbers(run_dir)):
        effective = rundir.attempt_path(run_dir, number) / rundir.EFFECTIVE
        if effective.exists():
            return Path(str(rundir.read_json(effective)["output_dir"]))
    return run_dir / rundir.CHECKPOINTS


def decide(run_dir: Path, spec: LaunchSpec) -> tuple[Resolved, list[str]]:
    """The resolved spec of the next attempt, resuming from the run's newest complete checkpoint.
    ``spec.batch`` holds only the batch flags typed for this attempt (``rules.resume.resume_batch``
    decides the rest from the checkpoint). Returns warnings (skipped incomplete checkpoints); raises
    ``SpecError`` when it cannot resume."""
    from launcher.records import checkpoints

    folder = output_dir(run_dir)
    latest, warnings = checkpoints.latest_complete(folder)
    if latest is None:
        seen = [c.path.name + (f" ({c.problem})" if c.problem else "") for c in checkpoints.scan(folder)]
        found = "; ".join(seen) if seen else "no checkpoint-* folders"
        raise SpecError([f"{run_dir.name}: no complete checkpoint to resume from in {folder} ({found})"])
    recorded = from_mapping(rundir.read_json(run_dir / rundir.SPEC), str(run_dir / rundir.SPEC))
    same = same_training_problems(recorded, spec)
    if same:
        raise SpecError(same)
    saved = checkpoints.topology(latest)
    spec, batch, problems = resume_spec(spec, saved)
    if problems:
        raise SpecError(problems)
    resolved = validate(spec)
    moved = saved.get("world_size") not in (None, resolved.world_size)
    resume = Resume(
        checkpoint=str(latest.path),
        step=latest.step,
        universal=moved and (saved.get("zero_stage") or 0) > 0,
        saved_world_size=saved.get("world_size"),
        saved_global_batch=batch.saved_global if batch else None,
        derived=batch.derived if batch else (),
    )
    return dataclasses.replace(resolved, resume=resume), warnings


def prepare(resolved: Resolved) -> None:
    """The side effect a resume needs before the ranks start: DeepSpeed's universal form of a
    checkpoint saved on another world size (made once, inside the checkpoint folder)."""
    from launcher.records import checkpoints, universal

    if resolved.resume is not None and resolved.resume.universal:
        (checkpoint,) = [
            c
            for c in checkpoints.scan(Path(resolved.resume.checkpoint).parent)
            if str(c.path) == resolved.resume.checkpoint
        ]
        universal.to_universal(checkpoint)
