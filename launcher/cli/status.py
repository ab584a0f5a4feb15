"""Job control: ``status``, ``logs`` and ``cancel``, each working from the run folder alone.

Fast by design: nothing heavy is imported, and SLURM's view of a job comes from ``sacct`` directly
(``cancel`` alone goes through submitit).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.backends.slurm_jobs import ACTIVE_SLURM
from launcher.cli.flags import locate, runs_dir_flag
from launcher.errors import Parser
from launcher.records import metrics, rundir, runs
from launcher.records.metrics import describe_saves, last_metrics, run_metrics, saves_of
from launcher.render import DECIDED_FILE

# ---------------------------------------------------------------- state


def slurm_states(found: list[runs.RunInfo]) -> dict[str, str]:
    ids = [job for run in found for job in run.job_ids]
    if not ids:
        return {}
    from launcher.backends import slurm_jobs

    return slurm_jobs.states(ids)


def state_of(run: runs.RunInfo, slurm: dict[str, str]) -> str:
    """The attempt's own verdict once it has one; until then SLURM's state of its job."""
    if run.run.get("cancelled"):
        return "cancelled"
    latest = run.latest
    if latest is None:
        return "unknown"
    job = str(latest.status.get("job_id", ""))
    queue_state = slurm.get(job, "")
    if queue_state.startswith("CANCELLED"):
        return "cancelled"
    if latest.state in rundir.ENDED or not job:
        return latest.state
    if queue_state and queue_state not in ACTIVE_SLURM:
        return f"{queue_state.lower()} (no verdict recorded)"
    return queue_state.lower() or latest.state


def elapsed(run: runs.RunInfo) -> str:
    starts = [float(a.status["started"]) for a in run.attempts if is_time(a.status.get("started"))]
    if not starts:
        return "-"
    end = run.latest.status.get("ended") if run.latest else None
    seconds = (float(end) if end is not None and is_time(end) else time.time()) - starts[0]
    return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"


def is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e11


def topology(run: runs.RunInfo) -> str:
    try:
        spec = rundir.read_json(run.path / rundir.SPEC)
        topo = spec["topology"]
        per_node = topo.get("gpus") or topo.get("procs") or 1
        return f"{topo['nodes']}x{per_node}{'gpu' if topo.get('gpus') else 'cpu'}"
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


# ---------------------------------------------------------------- status


def status(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch status",
        description="Runs, oldest first (the newest last, next to the prompt), with their state "
        "(SLURM's, refreshed, while a job has no verdict yet), nodes x processes, attempts, elapsed time, "
        "last logged step and loss, and the effective batch. With RUN: that run in detail.",
        epilog="examples:\n  ftlaunch status\n  ftlaunch status runs/sft-20261123-101500-ab12",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", nargs="?", help="a run folder, or its name (a unique prefix will do)")
    runs_dir_flag(parser)
    ns = parser.parse_args(argv)
    if ns.run:
        return status_detail(locate(ns.runs_dir, ns.run))
    found = runs.list_runs(ns.runs_dir)
    if not found:
        print(f"no runs under {ns.runs_dir}/")
        return 0
    slurm = slurm_states(found)
    rows: list[tuple[str, ...]] = [
        ("RUN", "BACKEND", "STATE", "NODES", "ATTEMPTS", "ELAPSED", "STEP", "METRIC", "EFFECTIVE")
    ]
    for run in found:
        try:
            rows.append(row(run, slurm))
        except RECORD_ERRORS as err:  # one odd record must not hide the other runs
            run.problems.append(f"{run.path}: unreadable record ({type(err).__name__}: {str(err)[:100]})")
            rows.append((run.path.name, "?", "unreadable", "?", "?", "-", "-", "-", "-"))
    print_table(rows)
    for run in found:
        for problem in run.problems:
            print(f"ftlaunch: {problem}", file=sys.stderr)
    return 0


RECORD_ERRORS = (OSError, ValueError, TypeError, KeyError, AttributeError, OverflowError)


def row(run: runs.RunInfo, slurm: dict[str, str]) -> tuple[str, ...]:
    found = run_metrics(run)
    effective = run.latest.status.get("effective", "") if run.latest else ""
    return (
        run.path.name,
        cell(run.run.get("backend", "?")),
        state_of(run, slurm),
        topology(run),
        str(len(run.attempts)),
        elapsed(run),
        cell(found.get("step", "-")),
        shown_metric(found),
        cell(effective) or "-",
    )


def shown_metric(record: dict[str, Any]) -> str:
    """The key metric of a trainer log as ``loss=2.31`` or ``reward=0.5`` (one word: the table's
    columns stay split by blanks for scripts); ``-`` when none."""
    key = metrics.key_metric(record)
    value = metrics.number(record.get(key)) if key else None
    return f"{key}={value:.4g}" if value is not None else "-"


def cell(value: Any) -> str:
    """A recorded value as a table cell: one line, bounded."""
    text = " ".join(str(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def status_detail(run_dir: Path) -> int:
    run = runs.read_run(run_dir)
    try:
        show_detail(run)
    except BrokenPipeError:  # `status RUN | head`: the reader left, not a bad record
        raise
    except RECORD_ERRORS as err:
        run.problems.append(f"{run.path}: unreadable record ({type(err).__name__}: {str(err)[:100]})")
    for problem in run.problems:
        print(f"ftlaunch: {problem}", file=sys.stderr)
    return 0


def show_detail(run: runs.RunInfo) -> None:
    slurm = slurm_states([run])
    print(f"run:      {run.path}")
    backend = cell(run.run.get("backend", "?"))
    print(f"backend:  {backend}   nodes: {topology(run)}   state: {state_of(run, slurm)}")
    if run.job_ids:
        print("jobs:     " + ", ".join(f"{j} ({slurm.get(j, 'unknown')})" for j in run.job_ids))
    for attempt in run.attempts:
        s = attempt.status
        logged = last_metrics(attempt.path)
        message = attempt.why_lost if attempt.state == "lost" else cell(s.get("message", ""))
        print(f"attempt {attempt.number}: {attempt.state}" + (f" - {message}" if message else ""))
        resumed = resumed_from(attempt.path)
        if resumed:
            print(f"  resumed: {resumed}")
        if s.get("restart"):
            how = " (in place)" if s.get("in_place") else ""
            print(f"  restart {cell(s['restart'])}{how}, after: {cell(s.get('cause', '?'))}")
        for key in ("job_id", "hosts", "head", "fault_host", "excluded", "effective", "exit_code"):
            value = s.get(key)
            if value not in (None, ""):
                shown = ", ".join(map(str, value)) if isinstance(value, list) else value
                print(f"  {key}: {cell(shown)}")
        if logged:
            print(f"  last logged: step {cell(logged.get('step'))} {shown_metric(logged)}")
        saved = describe_saves(saves_of(attempt.path))
        if saved:
            print(f"  checkpoints saved: {saved}")
        print(f"  logs: {attempt.path / rundir.LOGS}")
    print_checkpoints(run.path)


def resumed_from(attempt_dir: Path) -> str:
    """Where a resumed attempt continued and what changed, from its ``decided.json``."""
    decided = rundir.read_json_quiet(attempt_dir / DECIDED_FILE)
    resume, batch = decided.get("resume"), decided.get("batch")
    if not isinstance(resume, dict) or not isinstance(batch, dict):
        return ""
    text = f"from {cell(Path(str(resume.get('checkpoint'))).name)}"
    before, now = resume.get("saved_world_size"), batch.get("world_size")
    if before not in (None, now):
        text += f", world size {before} -> {now}"
    before, now = resume.get("saved_global_batch"), batch.get("global_batch")
    if before not in (None, now):
        text += f", global batch CHANGED {before} -> {now} (typed on resume: trains differently from here)"
    return text


def print_checkpoints(run_dir: Path) -> None:
    from launcher.records import checkpoints, resume

    folder = resume.output_dir(run_dir)
    found = checkpoints.scan(folder) if folder.is_dir() else []
    print(f"checkpoints: {folder}" + ("" if found else " (none yet)"))
    for c in found:
        print(f"  {c.path.name}: {'complete' if c.complete else 'INCOMPLETE - ' + str(c.problem)}")
