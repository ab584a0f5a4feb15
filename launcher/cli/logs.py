"""``ftlaunch logs RUN``: a run's node logs, one rank's lines, or follow them as they grow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.cli.flags import locate, runs_dir_flag
from launcher.errors import Parser, SpecError
from launcher.records import rundir
from launcher.run.follow import follow_lines, read_lines

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
