"""The node supervisor's handling of a stop signal that another thread of the launcher took."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.run import supervisor

CODE = """
import os, signal, sys, threading, time
from pathlib import Path

import pytest

from launcher.run import supervisor
from launcher.run import supervisor, tree

attempt = Path(sys.argv[1])
for folder in ("logs", "nodes"):
    (attempt / folder).mkdir(parents=True)
# A library's thread started before the launch held the stop signals (torch's, DeepSpeed's): the
# kernel gives it a signal that the main thread holds.
started = threading.Event()
threading.Thread(target=lambda: (started.set(), time.sleep(120)), daemon=True).start()
started.wait()
tree.defer_stop_signals()
real_spawn = supervisor.spawn

def spawn(*args):
    os.kill(os.getpid(), signal.SIGTERM)  # after the supervisor's handlers, before the node command
    time.sleep(0.5)
    return real_spawn(*args)

supervisor.spawn = spawn
verdict = supervisor.supervise(
    [sys.executable, "-c", "import time; time.sleep(120)"], {}, ".", attempt, 0, 1, own_signals=True
)
print(verdict.state, verdict.exit_code)
"""


def test_a_signal_taken_by_another_thread_before_the_spawn_still_ends_the_node(tmp_path: Path) -> None:
    """The node command started after the signal was handled must be ended too, not waited for."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CODE, str(tmp_path / "attempt")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["interrupted", "143"], done.stdout + done.stderr[-2000:]
    assert time.monotonic() - started < 30


def test_waiting_for_the_ranks_in_a_signal_handler_sees_them_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's pre-emption handler waits for the ranks while the main thread it interrupted is
    inside ``proc.wait()``: the command's exit must be seen at once, not after the whole grace."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    monkeypatch.setattr(supervisor, "CURRENT", proc)
    seen: list[tuple[bool, float]] = []

    def on_alarm(signum: int, frame: object) -> None:
        started = time.monotonic()
        seen.append((supervisor.wait_for_ranks(timeout=20), time.monotonic() - started))

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        proc.wait()
    finally:
        signal.signal(signal.SIGALRM, previous)
    ((exited, took),) = seen
    assert exited and took < 3, took
