"""What the launcher, each node's supervisor and each rank agree on without importing each other.

The supervisor (``run/``) and the ranks (``rank/``) are separate processes started from different
layers; the names here are the whole of their contract: the module every rank runs, the signals
that stop or pre-empt a run, and the environment variables that carry the rest.
"""

from __future__ import annotations

import signal
import sys

ENTRY_MODULE = "launcher.rank.entry"  # every rank runs `python -m ENTRY_MODULE ... RECIPE ARGS`
# Frames of these files are ftlaunch's wrapping around the recipe: a failure report hides them.
# saving.py and opguard.py stay visible: a save or an op build that fails is worth seeing.
RANK_FRAMES = ("launcher/rank/entry.py", "launcher/rank/guard.py", "launcher/rank/recorder.py")

STACK_SIGNAL = signal.SIGUSR1  # a rank writes every thread's Python stack to its stacks file
PREEMPTION_SIGNAL = signal.SIGUSR2  # submitit's default; SLURM sends it before a time limit too
# Each ends the run; exit 128 + signal. A set: the supervisor intersects it with sigpending().
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

SUPERVISOR_PID = "FTLAUNCH_SUPERVISOR_PID"  # tells the ranks whose death must end them too
MODE_ENV = "FTLAUNCH_CONSOLE"  # "all": every rank's output, raw
DEADLINE_ENV = "FTLAUNCH_DEADLINE"  # epoch seconds by which the last checkpoint must be on disk
ATTEMPT_ENV = "FTLAUNCH_ATTEMPT"  # set in every rank: the attempt number (1, 2, ...) it belongs to

PR_SET_PDEATHSIG = 1


def end_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux), so a
    supervisor killed outright (SIGKILL, the OOM killer) still takes its run down with it."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
