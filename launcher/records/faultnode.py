"""Which node an attempt's fault happened on, read from the records its ranks and supervisors left:
a node that holds it twice is excluded when SLURM requeues the job (``backends/slurm_node.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.records import rundir


def failures(attempt_dir: Path) -> set[tuple[str, Any]]:
    """(error, step) of every rank whose recipe raised."""
    folder = attempt_dir / rundir.FAILURES
    records = (
        [rundir.read_json_quiet(p) for p in sorted(folder.glob("rank*.json"))] if folder.is_dir() else []
    )
    return {(str(r.get("error")), r.get("step")) for r in records if r.get("error")}


# A rank that raised one of these lost its peers (the collective library noticed another rank's
# death); it is not the recipe's own error.
COLLECTIVE_ERRORS = ("third_party/gloo", "Connection closed by peer", "Connection reset by peer", "NCCL")


def fault_node(attempt_dir: Path, world_size: int) -> int | None:
    """The node an attempt's fault happened on, when its records single one out: a rank there hung
    (the first hang found), or died without a word (no completion marker, no error of its own:
    killed, or its node lost) on a node whose supervisor did not end its ranks itself. None when
    the recipe raised an error of its own, or nothing points at one node."""
    folder = attempt_dir / rundir.HANGS
    hangs = [rundir.read_json_quiet(p) for p in sorted(folder.glob("node*.json"))] if folder.is_dir() else []
    if hangs := [h for h in hangs if "node" in h]:
        return int(min(hangs, key=lambda h: float(h.get("detected", 0)))["node"])
    errors = [error for error, _ in failures(attempt_dir)]
    if any(not any(mark in error for mark in COLLECTIVE_ERRORS) for error in errors):
        return None
    silent = silent_nodes(attempt_dir, world_size)
    return silent.pop() if len(silent) == 1 else None


def silent_nodes(attempt_dir: Path, world_size: int) -> set[int]:
    """The nodes where a rank died without a word (no completion marker, no error of its own:
    killed, or its node lost), leaving out nodes whose supervisor ended its ranks itself."""
    done = {int(m.get("rank", -1)) for m in rundir.completed_ranks(attempt_dir)}
    silent = set()
    for rank in range(world_size):
        beat = rundir.read_json_quiet(attempt_dir / rundir.HEARTBEATS / f"rank{rank}.json")
        node = beat.get("node")
        said = (attempt_dir / rundir.FAILURES / f"rank{rank}.json").exists() or rank in done
        cut = rundir.read_json_quiet(attempt_dir / rundir.NODES / f"node{node}.json").get("cut_short")
        if node is not None and not said and not cut:
            silent.add(int(node))
    return silent
