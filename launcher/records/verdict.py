"""How an attempt ended, judged from the ranks' completion markers and not from an exit code alone
(torchrun reports a crash at shutdown after a finished run as a failure), and recorded in the
attempt's ``status.json`` per node and as a whole."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.records import rundir
from launcher.records.faultnode import fault_node

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: not finished, nothing lost, resumable


MARKER_WAIT_SECONDS = 30.0  # how long a node that exited cleanly waits for other nodes' markers


@dataclass(frozen=True)
class Verdict:
    state: str  # finished | failed | hung | interrupted | refused | preempted
    exit_code: int  # what the launcher should exit with
    message: str
    report: tuple[str, ...] = ()  # printed under the message: the failing rank's last lines, ...


def interrupted_before_start(signum: int) -> Verdict:
    name = signal.Signals(signum).name
    return Verdict("interrupted", 128 + signum, f"interrupted ({name}) before any process started")


def record_node(
    attempt_dir: Path, node_rank: int, exit_code: int, verdict: Verdict, cut_short: bool = False
) -> Verdict:
    """This node's end; ``cut_short``: its supervisor ended the ranks itself (a hang, another node's
    end), so a rank that died without a word here was not killed by the machine."""
    rundir.write_json(
        attempt_dir / rundir.NODES / f"node{node_rank}.json",
        {"node_rank": node_rank, "host": os.uname().nodename, "exit_code": exit_code, "state": verdict.state}
        | ({"cut_short": True} if cut_short else {}),
    )
    return verdict


def judge(
    attempt_dir: Path,
    node_rank: int,
    world_size: int,
    exit_code: int,
    stopped_by: int | None = None,
    cut_short: bool = False,
) -> Verdict:
    """Finished means every rank wrote its completion marker; the exit code alone is not trusted
    (DeepSpeed on CPU sometimes aborts at shutdown after training finished). ``cut_short``: the
    supervisor ended the ranks itself (a hang, another node's end), so no marker is awaited."""
    clean = exit_code == 0 and stopped_by is None and not cut_short
    done = wait_for_markers(attempt_dir, world_size) if clean else rundir.completed_ranks(attempt_dir)
    if len(done) == world_size:
        preempted = attempt_dir / rundir.PREEMPTED
        if preempted.exists():
            record = rundir.read_json(preempted)
            return Verdict(
                "preempted",
                PREEMPTED_EXIT,
                f"{record.get('reason', 'pre-empted')}: every rank saved checkpoint-{record.get('step')} and "
                f"stopped; continue with: ftlaunch resume {attempt_dir.parent.parent}",
            )
        if exit_code != 0:
            return Verdict(
                "finished",
                0,
                f"training finished on all {world_size} ranks, but a process crashed at shutdown "
                f"(exit {exit_code}); checkpoints and outputs are complete",
            )
        return Verdict(
            "finished", 0, f"finished ({world_size}/{world_size} ranks completed){unapplied(attempt_dir)}"
        )
    error = attempt_dir / rundir.ENTRY_ERROR
    if error.exists():
        # The recipe's arguments contradicted the spec: the same "bad input" exit code as the CLI.
        return Verdict("refused", 2, error.read_text().rstrip().removeprefix("ftlaunch: "))
    counted = f"{len(done)}/{world_size} ranks completed"
    if stopped_by is not None:  # the shell's convention: 128 + the signal (130 for Ctrl-C, 143 for TERM)
        name = signal.Signals(stopped_by).name
        return Verdict("interrupted", 128 + stopped_by, f"interrupted ({name}; {counted})")
    return Verdict("failed", exit_code or 1, f"failed (exit {exit_code}, {counted})")


def unapplied(attempt_dir: Path) -> str:
    """The launch's numbers reach the trainer through TrainingArguments; say so when the recipe
    never built any (it trained some other way, or not at all)."""
    if (attempt_dir / rundir.EFFECTIVE).exists():
        return ""
    return (
        "; but the recipe never built TrainingArguments, so the launch's batch, precision and "
        "clipping were not applied"
    )


def wait_for_markers(attempt_dir: Path, world_size: int) -> list[dict[str, Any]]:
    """Other nodes may still be writing their markers when this node's processes have exited."""
    deadline = time.monotonic() + MARKER_WAIT_SECONDS
    while True:
        done = rundir.completed_ranks(attempt_dir)
        if len(done) >= world_size or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def record_verdict(attempt_dir: Path, verdict: Verdict) -> None:
    """The attempt's final state, with the effective numbers the ranks recorded."""
    effective_path = attempt_dir / rundir.EFFECTIVE
    effective = rundir.read_json(effective_path) if effective_path.exists() else {}
    host = fault_host(attempt_dir) if verdict.state in ("failed", "hung") else None
    rundir.update_status(
        attempt_dir,
        **({"fault_host": host} if host else {}),
        state=verdict.state,
        exit_code=verdict.exit_code,
        message=verdict.message,
        ended=time.time(),
        completed_ranks=len(rundir.completed_ranks(attempt_dir)),
        effective=effective.get("summary", ""),
    )


def fault_host(attempt_dir: Path) -> str | None:
    """The host the attempt's fault happened on, when its records single one out."""
    status = rundir.read_json_quiet(attempt_dir / rundir.STATUS)
    node = fault_node(attempt_dir, int(status.get("world_size", 0) or 0))
    hosts = status.get("hosts") or [os.uname().nodename]
    return str(hosts[node]) if node is not None and node < len(hosts) else None
