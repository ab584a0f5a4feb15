"""Every rank's Python stack, for a hang report: py-spy where it is installed, else the rank's own
faulthandler on ``protocol.STACK_SIGNAL``.

py-spy reads a process from outside, so it also gets the stack of a rank that is stopped (SIGSTOP,
a debugger) or wedged in native code where no signal handler runs; faulthandler needs the rank to
run its handler, which a rank blocked inside gloo or NCCL still does, a stopped one does not.
Each dump is appended to ``logs/stacks/rank{R}.txt``; the report reads back only what this dump
added.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from launcher import protocol
from launcher.records import rundir

STACK_WAIT_SECONDS = 3.0  # for the ranks to write their stacks
PY_SPY_SECONDS = 10.0  # for all py-spy dumps together
STOPPED = {"stopped", "tracing-stop"}
NOT_RUNNING = {*STOPPED, "zombie", "dead", None}


class Rank(Protocol):
    """What a stack dump needs of a rank's heartbeat."""

    @property
    def rank(self) -> int: ...
    @property
    def pid(self) -> int: ...


def py_spy() -> str | None:
    """The py-spy beside this interpreter (a virtual environment not on PATH), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which("py-spy")


def collect_stacks(
    attempt_dir: Path, ranks: tuple[Rank, ...], spy: str | bool | None = True
) -> dict[int, str | None]:
    """Every rank's stack, each also appended to its file; None for a rank that gave none (gone,
    or stopped with no py-spy to read it). ``spy``: the py-spy to use, True to look for one, or
    False/None for faulthandler only."""
    spy = py_spy() if spy is True else (spy or None)
    folder = attempt_dir / rundir.LOGS / rundir.STACKS
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {r.rank: _size(folder / f"rank{r.rank}.txt") for r in ranks}
    states = {r.rank: process_state(r.pid) for r in ranks}
    alive = [r for r in ranks if states[r.rank] not in ("zombie", "dead", None)]
    read = dump_with_py_spy(spy, alive, folder) if spy else set()
    asked = [r for r in alive if r.rank not in read and states[r.rank] not in STOPPED]
    for r in asked:
        with contextlib.suppress(OSError):
            os.kill(r.pid, protocol.STACK_SIGNAL)
    deadline = time.monotonic() + STACK_WAIT_SECONDS
    while time.monotonic() < deadline and any(
        _size(folder / f"rank{r.rank}.txt") <= sizes[r.rank] for r in asked
    ):
        time.sleep(0.1)
    time.sleep(0.2 if asked else 0)  # the dump of the last thread may still be being written
    out: dict[int, str | None] = {}
    for r in ranks:
        with contextlib.suppress(OSError), open(folder / f"rank{r.rank}.txt", errors="replace") as stream:
            stream.seek(sizes[r.rank])
            out[r.rank] = stream.read() or None
        out.setdefault(r.rank, None)
    return out


def dump_with_py_spy(spy: str, ranks: list[Rank], folder: Path) -> set[int]:
    """py-spy on every rank at once; the ranks it read. ``--nonblocking``: py-spy reads the
    process's memory without suspending it, which also works on a stopped process (that py-spy
    cannot suspend) and one in uninterruptible sleep; a rank that makes no progress has a stable
    stack anyway. A failed dump (no ptrace permission in a container, say) leaves that rank to
    faulthandler."""
    running: dict[int, subprocess.Popen[bytes]] = {}
    for r in ranks:
        argv = [spy, "dump", "--nonblocking", "--pid", str(r.pid)]
        with contextlib.suppress(OSError):
            running[r.rank] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + PY_SPY_SECONDS
    read = set()
    for rank, proc in running.items():
        try:
            out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            continue
        if proc.returncode == 0 and out.strip():
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(folder / f"rank{rank}.txt", "ab") as stream:
                stream.write(f"--- py-spy dump at {stamp}\n".encode() + out + b"\n")
            read.add(rank)
    return read


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def process_state(pid: int) -> str | None:
    import psutil

    try:
        return str(psutil.Process(pid).status())
    except psutil.Error:
        return None


FAULTHANDLER_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')
PY_SPY_FRAME = re.compile(r"^\s+(?P<func>\S+) \((?P<file>.+):(?P<line>\d+)\)$")
THREAD = ("Thread 0x", "Current thread 0x", "Thread ")


def innermost_frame(stack: str) -> str | None:
    """From a faulthandler or py-spy dump (both most recent call first): the innermost frame of the
    deepest thread, the one that trains (a data loader's or a logger's thread is shallow)."""
    threads: list[list[re.Match[str]]] = []
    for line in stack.splitlines():
        if line.startswith(THREAD):
            threads.append([])
        elif threads and (match := FAULTHANDLER_FRAME.match(line) or PY_SPY_FRAME.match(line)):
            threads[-1].append(match)
    deepest = max(threads, key=len, default=[])
    if not deepest:
        return None
    top = deepest[0]
    return f"{top['func']} ({short_path(top['file'])}:{top['line']})"


def short_path(path: str) -> str:
    return path.split("site-packages/", 1)[-1]
