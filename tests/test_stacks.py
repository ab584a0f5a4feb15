"""Stacks for a hang report, from real processes: a rank's own faulthandler on the stack signal, and
py-spy (a test dependency) from outside, which also reads a stopped process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher import protocol
from launcher.records import rundir
from launcher.run.stacks import collect_stacks, innermost_frame, process_state, py_spy
from launcher.run.watchdog import Beat, where

RANK = """
import faulthandler, signal, sys, time
faulthandler.register({signum}, file=open(sys.argv[1], "a"), all_threads=True)
def waits_in_a_collective():
    print("ready", flush=True)
    time.sleep(600)
waits_in_a_collective()
"""


@dataclass(frozen=True)
class Rank:
    rank: int
    pid: int


@pytest.fixture
def rank(tmp_path: Path) -> Iterator[Rank]:
    """A process that dumps its stack on the stack signal, as a rank does (``rank/heartbeat.py``)."""
    folder = tmp_path / rundir.LOGS / rundir.STACKS
    folder.mkdir(parents=True)
    code = RANK.format(signum=int(protocol.STACK_SIGNAL))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder / "rank3.txt")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield Rank(3, proc.pid)
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def stop(rank: Rank) -> None:
    """SIGSTOP, and wait until the kernel has stopped it (the signal is delivered asynchronously)."""
    os.kill(rank.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while process_state(rank.pid) != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_running_rank_writes_its_own_stack_on_the_signal(tmp_path: Path, rank: Rank) -> None:
    stacks = collect_stacks(tmp_path, (rank,), spy=False)
    assert innermost_frame(stacks[3] or "") == "waits_in_a_collective (<string>:6)", stacks
    again = collect_stacks(tmp_path, (rank,), spy=False)
    assert again[3] is not None and again[3].count("Current thread") == 1, "only what this dump added"


def test_a_stopped_rank_has_no_stack_without_py_spy(tmp_path: Path, rank: Rank) -> None:
    stop(rank)
    started = time.monotonic()
    assert collect_stacks(tmp_path, (rank,), spy=False) == {3: None}
    assert time.monotonic() - started < 1, "a stopped rank is not waited for"


def test_py_spy_reads_a_stopped_rank_and_the_report_says_where_it_stopped(tmp_path: Path, rank: Rank) -> None:
    spy = py_spy()
    assert spy is not None, "py-spy is a test dependency: pip install -e '.[test]'"
    stop(rank)
    stacks = collect_stacks(tmp_path, (rank,), spy=spy)
    assert "py-spy dump" in (tmp_path / rundir.LOGS / rundir.STACKS / "rank3.txt").read_text()
    beat = Beat(rank=3, node=0, pid=rank.pid, phase="training", step=5, time=time.time())
    assert where(beat, stacks[3]) == (
        "the process is stopped (SIGSTOP, or a debugger holds it) in waits_in_a_collective (<string>:6)"
    )


def test_py_spy_reads_a_running_rank_and_a_gone_one_gives_none(tmp_path: Path, rank: Rank) -> None:
    spy = py_spy()
    assert spy is not None, "py-spy is a test dependency: pip install -e '.[test]'"
    gone = Rank(4, 2**22 + 7)  # no such process
    stacks = collect_stacks(tmp_path, (rank, gone), spy=spy)
    assert innermost_frame(stacks[3] or "") == "waits_in_a_collective (<string>:6)", stacks
    assert stacks[4] is None
