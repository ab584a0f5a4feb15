"""Finding a hung rank: the node supervisor reads its ranks' heartbeats (``rank/heartbeat.py``)
and ends the node when one has not moved for longer than its phase allows.

The rule (``allowance``, its numbers in ``spec/faults.py``), with T the hang timeout
(``--hang-timeout``, default 300 s):
- a training step: max(T, 10 x the slowest step this rank has made);
- the first step, a save, an evaluation: max(4T, 10 x the slowest save or evaluation so far);
- before the trainer starts (loading, dataset preparation, op builds): not watched. Those can
  legitimately take an hour, and the process group's own timeout stays as the second line.

Before ending the node, every rank's Python stack is collected (``run/stacks.py``: py-spy or
faulthandler); the report names the rank that stopped and where it was.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.records import rundir
from launcher.run.stacks import NOT_RUNNING, STOPPED, collect_stacks, innermost_frame, process_state
from launcher.spec.faults import LONG_FACTOR, STEP_FACTOR

WATCHED = {"first step": "long", "training": "step", "saving": "long", "evaluating": "long"}
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Beat:
    rank: int
    node: int
    pid: int
    phase: str
    step: int | None
    time: float
    slowest_step: float = 0.0
    slowest_long: float = 0.0

    @classmethod
    def read(cls, path: Path) -> Beat | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (OSError, ValueError, TypeError, KeyError):
            return None  # being replaced, or not written yet: the next poll reads it


def allowance(beat: Beat, timeout: float) -> float | None:
    """Seconds this rank may stay in its phase without a new heartbeat; None: not watched."""
    kind = WATCHED.get(beat.phase)
    if kind == "step":
        return max(timeout, STEP_FACTOR * beat.slowest_step)
    if kind == "long":
        return max(LONG_FACTOR * timeout, STEP_FACTOR * beat.slowest_long)
    return None


@dataclass(frozen=True)
class Hang:
    """The rank that stopped first (the others usually wait for it inside a collective)."""

    stuck: Beat
    seconds: float
    beats: tuple[Beat, ...]
    broken: bool = False  # the stuck rank's process is stopped or gone (not merely waiting)


def overdue(
    beats: list[Beat], timeout: float, now: float, states: Mapping[int, str | None] | None = None
) -> Hang | None:
    """Pure: the hang among these heartbeats, if any. The stuck rank is one whose process is stopped
    or gone (``states``: pid -> process state), else the one that made the least progress (lowest
    step, then oldest heartbeat); the others are usually waiting for it inside a collective."""
    late = [b for b in beats if (limit := allowance(b, timeout)) is not None and now - b.time > limit]
    if not late:
        return None
    states = states or {}
    broken = [b for b in beats if states.get(b.pid, "running") in NOT_RUNNING]
    stuck = min(broken or beats, key=lambda b: (b.step if b.step is not None else -1, b.time))
    return Hang(stuck, now - stuck.time, tuple(beats), broken=bool(broken))


class Watchdog:
    """A thread of the node supervisor: polls this node's heartbeats; on a hang, collects every
    rank's stack, records ``hangs/node{K}.json`` and calls ``on_hang`` (which ends the node's tree).

    With other nodes (``patience`` > 0), a hang whose ranks here are all running (waiting inside a
    collective) is acted on ``patience`` seconds later than one with a stopped or dead rank: the
    node that holds the culprit finds it first and tells the others over the link."""

    def __init__(
        self,
        attempt_dir: Path,
        node_rank: int,
        timeout: float,
        on_hang: Callable[[], None],
        patience: float = 0.0,
    ) -> None:
        self.attempt_dir, self.node_rank = attempt_dir, node_rank
        self.timeout, self.on_hang, self.patience = timeout, on_hang, patience
        self.found: list[str] = []  # the report, once a hang was found
        self.on_found: Callable[[str], None] | None = None  # told at once, before the stacks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def beats(self) -> list[Beat]:
        folder = self.attempt_dir / rundir.HEARTBEATS
        found = [Beat.read(p) for p in sorted(folder.glob("rank*.json"))] if folder.is_dir() else []
        return [b for b in found if b is not None and b.node == self.node_rank]

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            now = time.time()
            beats = self.beats()
            hang = overdue(beats, self.timeout, now, {b.pid: process_state(b.pid) for b in beats})
            if hang is not None and not hang.broken and self.patience:
                limit = allowance(hang.stuck, self.timeout) or 0.0
                hang = hang if hang.seconds > limit + self.patience else None
            if hang is not None and not self._stop.is_set():
                if self.on_found is not None:  # other nodes save their stacks while theirs still wait
                    self.on_found(describe(hang.stuck, hang.seconds, None, first=True))
                self.found = self.report(hang, detected=now)
                self.on_hang()
                return

    def dump_stacks(self) -> None:
        """Every rank's stack on this node, into logs/stacks/, while it is ended for another node."""
        self.stop()
        collect_stacks(self.attempt_dir, tuple(self.beats()))

    def report(self, hang: Hang, detected: float) -> list[str]:
        stacks = collect_stacks(self.attempt_dir, hang.beats)
        lines = [describe(hang.stuck, hang.seconds, stacks.get(hang.stuck.rank), first=True)]
        now = time.time()
        lines += [
            describe(b, now - b.time, stacks.get(b.rank), first=False)
            for b in hang.beats
            if b is not hang.stuck
        ]
        folder = self.attempt_dir / rundir.LOGS / rundir.STACKS
        record = self.attempt_dir / rundir.HANGS / f"node{self.node_rank}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_json(
            record,
            {"rank": hang.stuck.rank, "node": hang.stuck.node, "step": hang.stuck.step,
             "phase": hang.stuck.phase, "seconds": round(hang.seconds, 1), "timeout": self.timeout,
             "detected": detected, "reported": time.time(), "lines": lines, "stacks": str(folder)},
        )  # fmt: skip
        return lines


def describe(beat: Beat, seconds: float, stack: str | None, first: bool) -> str:
    """``rank 1 (node 0) made no progress for 62 s at step 15 (training): <where>``."""
    step = f"step {beat.step}" if beat.step is not None else "its first step"
    what = "made no progress" if first else "waited"
    at = f"at {step} ({beat.phase})"
    return f"rank {beat.rank} (node {beat.node}) {what} for {seconds:.0f} s {at}: {where(beat, stack)}"


def where(beat: Beat, stack: str | None) -> str:
    state = process_state(beat.pid)
    frame = innermost_frame(stack or "")
    if state in STOPPED:
        stopped = "the process is stopped (SIGSTOP, or a debugger holds it)"
        return f"{stopped} in {frame}" if frame else stopped
    if state in NOT_RUNNING:
        return "the process is gone"
    return f"in {frame}" if frame else f"no stack (the process is {state} and did not answer)"
