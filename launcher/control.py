"""Job control: ``status``, ``logs`` and ``cancel``, each working from the run folder alone.

Fast by design: nothing heavy is imported, and SLURM's view of a job comes from ``sacct`` directly
(``cancel`` alone goes through submitit).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from launcher import metrics, rundir
from launcher.errors import Parser, SpecError
from launcher.render import DECIDED_FILE

ACTIVE_SLURM = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING"}


def runs_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="where run folders live (default: runs)")


def locate(runs_dir: str, name: str) -> Path:
    try:
        return rundir.find_run(runs_dir, name)
    except LookupError as err:
        raise SpecError([f"{err}; list runs with: ftlaunch status --runs-dir {runs_dir}"]) from None


# ---------------------------------------------------------------- state


def slurm_states(runs: list[rundir.RunInfo]) -> dict[str, str]:
    ids = [job for run in runs for job in run.job_ids]
    if not ids:
        return {}
    from launcher.backends import slurm

    return slurm.states(ids)


def state_of(run: rundir.RunInfo, slurm: dict[str, str]) -> str:
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


METRICS_TAIL = 64 * 1024  # bytes of metrics.jsonl read for the newest loss before reading it all


def metric_record(line: str) -> dict[str, Any] | None:
    """One trainer log of ``metrics.jsonl``; None for a line cut by a crash or otherwise not a record."""
    try:
        record = rundir.json_line(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def last_metrics(attempt_dir: Path) -> dict[str, Any]:
    """The newest log of training steps with the trainer's key metric (loss, reward, ...; not the
    end-of-training summary). The tail is read first: a long run's log grows to megabytes, and
    ``status`` reads every run's."""
    path = attempt_dir / rundir.METRICS
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {}
    for start in dict.fromkeys((max(0, size - METRICS_TAIL), 0)):
        for line in reversed(lines_from(path, start)):
            record = metric_record(line)
            if record is not None and metrics.is_step_log(record) and metrics.key_metric(record):
                return record
    return {}


def lines_from(path: Path, start: int) -> list[str]:
    """The whole lines of ``path`` from byte ``start`` on (the first one, cut, is dropped)."""
    with open(path, "rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()
    return lines[1:] if start else lines


def run_metrics(run: rundir.RunInfo) -> dict[str, Any]:
    """The newest loss of the run: a new attempt that has not logged yet shows its predecessor's."""
    for attempt in reversed(run.attempts):
        found = last_metrics(attempt.path)
        if found:
            return found
    return {}


def elapsed(run: rundir.RunInfo) -> str:
    starts = [float(a.status["started"]) for a in run.attempts if is_time(a.status.get("started"))]
    if not starts:
        return "-"
    end = run.latest.status.get("ended") if run.latest else None
    seconds = (float(end) if end is not None and is_time(end) else time.time()) - starts[0]
    return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"


def is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e11


def topology(run: rundir.RunInfo) -> str:
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
    found = rundir.list_runs(ns.runs_dir)
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


def row(run: rundir.RunInfo, slurm: dict[str, str]) -> tuple[str, ...]:
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
    run = rundir.read_run(run_dir)
    try:
        show_detail(run)
    except BrokenPipeError:  # `status RUN | head`: the reader left, not a bad record
        raise
    except RECORD_ERRORS as err:
        run.problems.append(f"{run.path}: unreadable record ({type(err).__name__}: {str(err)[:100]})")
    for problem in run.problems:
        print(f"ftlaunch: {problem}", file=sys.stderr)
    return 0


def show_detail(run: rundir.RunInfo) -> None:
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
        for key in ("job_id", "hosts", "head", "effective", "exit_code"):
            if s.get(key) not in (None, ""):
                print(f"  {key}: {cell(s[key])}")
        if logged:
            print(f"  last logged: step {cell(logged.get('step'))} {shown_metric(logged)}")
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
    from launcher import checkpoints, resume

    folder = resume.output_dir(run_dir)
    found = checkpoints.scan(folder) if folder.is_dir() else []
    print(f"checkpoints: {folder}" + ("" if found else " (none yet)"))
    for c in found:
        print(f"  {c.path.name}: {'complete' if c.complete else 'INCOMPLETE - ' + str(c.problem)}")


# ---------------------------------------------------------------- logs


def logs(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch logs",
        description="Print one rank's output (rank 0 of the newest attempt by default), with the "
        "node's own messages (pre-flight, launcher).",
        epilog="examples:\n  ftlaunch logs RUN\n  ftlaunch logs RUN --rank 3 --attempt 1\n"
        "  ftlaunch logs RUN --follow",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="a run folder, or its name (a unique prefix will do)")
    parser.add_argument("--rank", type=int, default=0, help="global rank (default 0)")
    parser.add_argument("--attempt", type=int, help="attempt number (default: the newest)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing until the attempt ends")
    runs_dir_flag(parser)
    ns = parser.parse_args(argv)
    run_dir = locate(ns.runs_dir, ns.run)
    attempt_dir = pick_attempt(run_dir, ns.attempt)
    per_node = int(rundir.read_json(attempt_dir / rundir.PLAN).get("per_node", 1))
    if ns.rank < 0:
        raise SpecError([f"--rank {ns.rank}: ranks start at 0"])
    log = attempt_dir / rundir.LOGS / f"node{ns.rank // per_node}.log"
    lines = follow_lines(log, attempt_dir) if ns.follow else read_lines(log)
    try:
        for line in lines:
            if of_rank(line, ns.rank):
                sys.stdout.write(line)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    return 0


def pick_attempt(run_dir: Path, number: int | None) -> Path:
    numbers = rundir.attempt_numbers(run_dir)
    if not numbers:
        raise SpecError([f"{run_dir} has no attempt yet"])
    if number is None:
        return rundir.attempt_path(run_dir, numbers[-1])
    if number not in numbers:
        raise SpecError([f"--attempt {number}: {run_dir} has attempts {', '.join(map(str, numbers))}"])
    return rundir.attempt_path(run_dir, number)


def of_rank(line: str, rank: int) -> bool:
    """A line of this rank (``[rankR]:`` prefix) or of the node itself (no rank prefix)."""
    if not line.startswith("[rank"):
        return True
    return line.startswith(f"[rank{rank}]:")


def read_lines(path: Path) -> Iterator[str]:
    if path.exists():
        with open(path, errors="replace") as f:
            yield from f


def follow_lines(path: Path, attempt_dir: Path) -> Iterator[str]:
    """Like ``tail -f``, ending once the attempt has its verdict and nothing more was written."""
    offset = 0
    while True:
        ended = attempt_ended(attempt_dir)
        if path.exists():
            with open(path, errors="replace") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            yield from chunk.splitlines(keepends=True)
        if ended:
            return
        time.sleep(1)


def attempt_ended(attempt_dir: Path) -> bool:
    path = attempt_dir / rundir.STATUS
    try:
        return str(rundir.read_json(path).get("state")) in rundir.ENDED if path.exists() else False
    except ValueError:
        return False


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
    run = rundir.read_run(locate(ns.runs_dir, ns.run))
    backend = run.latest.status.get("backend") if run.latest else None  # a resume may have moved it
    if (backend or run.run.get("backend")) == "slurm":
        return cancel_slurm(run)
    return cancel_local(run)


def cancel_slurm(run: rundir.RunInfo) -> int:
    from launcher.backends import slurm

    live = [job for job, state in slurm.states(run.job_ids).items() if state in ACTIVE_SLURM]
    if not live:
        print(f"ftlaunch: {run.path.name} has no queued or running SLURM job; nothing to cancel")
        return 0
    for job in live:
        slurm.cancel(run.path, job)
    rundir.update_json(run.path / rundir.RUN, cancelled=True, cancelled_at=time.time())
    print(f"ftlaunch: cancelled SLURM job {', '.join(live)} of {run.path.name}")
    return 0


def cancel_local(run: rundir.RunInfo) -> int:
    latest = run.latest
    pid = latest.status.get("launcher_pid") if latest else None
    if latest is None or latest.state != "running" or not isinstance(pid, int):
        print(f"ftlaunch: {run.path.name} is not running ({run.state}); nothing to cancel")
        return 0
    os.kill(pid, signal.SIGTERM)  # the node supervisor ends its whole process tree
    rundir.update_json(run.path / rundir.RUN, cancelled=True, cancelled_at=time.time())
    print(f"ftlaunch: stopping {run.path.name} (launcher pid {pid})")
    return 0
