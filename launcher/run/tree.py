"""The process tree of a node: every descendant is known (child subreaper), stop signals are held
until it is, forwarded as one, and nothing outlives the supervisor."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from launcher.protocol import PREEMPTION_SIGNAL, STACK_SIGNAL, STOP_SIGNALS, end_with_parent

GRACE_SECONDS = 10.0
HUNG_GRACE_SECONDS = 2.0  # a hung rank answers no SIGTERM: it is blocked in C, or stopped


def defer_stop_signals() -> None:
    """Hold Ctrl-C / SIGTERM / SIGHUP until the supervisor's handlers are in place: from creating the
    run folder to owning the processes, an interruption is recorded rather than half-done."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def pending_stop_signal() -> int | None:
    """A stop signal that arrived while deferred, consumed; None if there was none."""
    pending = signal.sigpending() & STOP_SIGNALS
    if not pending:
        return None
    return int(signal.sigwait(pending))


def start_child(parent: int) -> None:
    """In the node command before exec: end with the supervisor (checked after asking, as the
    supervisor may already be gone), take stop signals again, and ignore the pre-emption signal.
    An ignored signal stays ignored across exec (a handler would not), so accelerate's torchrun
    agent ignores it while the ranks install their own handler. The same for the stack signal.
    SIGKILL when the supervisor dies: torchrun's SIGTERM handler was seen to hang there for good,
    its workers already gone; the ranks end with the agent (``rank/entry.py``)."""
    end_with_parent(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)
    for signum in STOP_SIGNALS:  # not the supervisor's handlers: they would run here, in the fork
        signal.signal(signum, signal.SIG_DFL)
    release_stop_signals()
    signal.signal(PREEMPTION_SIGNAL, signal.SIG_IGN)
    signal.signal(STACK_SIGNAL, signal.SIG_IGN)  # meant for the ranks, which register their own


class Interruption:
    """The first stop signal the supervisor received, if any."""

    signum: int | None = None

    def is_set(self) -> bool:
        return self.signum is not None


def forward_signals(tree: ProcessTree) -> Interruption:
    """On Ctrl-C / SIGTERM / SIGHUP: pass the signal to every process of the tree, then end them.
    The pre-emption signal is passed on alone: the ranks save, stop and exit by themselves."""
    interrupted = Interruption()

    def preempt(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            print("\nftlaunch: pre-emption signal; the ranks save at this step and stop", file=sys.stderr)
        tree.send(signum)

    signal.signal(PREEMPTION_SIGNAL, preempt)

    def handler(signum: int, _frame: FrameType | None) -> None:
        if interrupted.is_set():
            return
        interrupted.signum = signum
        # SIGTERM whatever arrived: torchrun treats it like SIGINT, and a process still importing
        # ends quietly instead of printing a KeyboardInterrupt traceback into the console. Started
        # before the message: a print that fails here (a closed stream, or stderr in the middle of
        # another write: "reentrant call") must not keep the tree from being ended.
        threading.Thread(target=tree.end_all, daemon=True).start()
        with contextlib.suppress(OSError, RuntimeError):
            name = signal.Signals(signum).name
            print(
                f"\nftlaunch: got {name}; stopping all processes (their last output: the run's logs/)",
                file=sys.stderr,
            )

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    return interrupted


class ProcessTree:
    """Every process we started, found even after torchrun moved its workers to new sessions.

    We become a child subreaper so orphans are re-parented to us rather than to init, and keep a
    running snapshot of descendants so a worker whose parent already died is still ended.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._known: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def become_subreaper(self) -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            pr_set_child_subreaper = 36
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)

    def watch(self) -> None:
        self._snapshot()
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self._snapshot()

    def _snapshot(self) -> None:
        with self._lock:
            for p in self._descendants():
                self._known.setdefault(p.pid, p)

    def _descendants(self) -> Iterator[Any]:
        try:
            yield from self._psutil.Process().children(recursive=True)
        except self._psutil.Error:
            return

    def send(self, signum: int) -> list[Any]:
        """Signal every live process of the tree; return them."""
        self._snapshot()
        with self._lock:
            procs = [p for p in self._known.values() if p.is_running()]
        for p in procs:
            with contextlib.suppress(self._psutil.Error):
                p.send_signal(signum)
        return procs

    def end_hung(self) -> None:
        self.end_all(grace=HUNG_GRACE_SECONDS)

    def end_all(self, signum: int = signal.SIGTERM, grace: float = GRACE_SECONDS) -> None:
        """Signal every live process of the tree, wait a grace period, then kill what is left."""
        procs = self.send(signum)
        _, alive = self._psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            with contextlib.suppress(self._psutil.Error):
                p.kill()
        self._psutil.wait_procs(alive, timeout=5)
        if signum == signal.SIGTERM:
            self._stop.set()
