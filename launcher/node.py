"""The node supervisor: runs one node's ``accelerate launch`` and owns everything it starts.

Used by the local backend and by every SLURM node task alike. It spawns the node command, copies
its rank-prefixed output to the console and to ``logs/node{K}.log``, makes sure no process of the
tree outlives it (torchrun starts workers in new sessions, so a process-group kill misses them:
we become a child subreaper and keep a snapshot of every descendant), and judges the outcome from
the ranks' completion markers, not from the exit code alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from launcher import rundir

if TYPE_CHECKING:
    from launcher import console

GRACE_SECONDS = 10.0
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: not finished, nothing lost, resumable
PREEMPTION_SIGNAL = signal.SIGUSR2  # submitit's default; SLURM sends it before a time limit too
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # each ends the run; exit 128 + signal
SUPERVISOR_PID = "FTLAUNCH_SUPERVISOR_PID"  # tells the ranks whose death must end them too
PR_SET_PDEATHSIG = 1
CURRENT: subprocess.Popen[bytes] | None = None  # the node command being supervised, if any


def end_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux), so a
    supervisor killed outright (SIGKILL, the OOM killer) still takes its run down with it."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


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
    agent ignores it while the ranks install their own handler."""
    end_with_parent()
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)
    for signum in STOP_SIGNALS:  # not the supervisor's handlers: they would run here, in the fork
        signal.signal(signum, signal.SIG_DFL)
    release_stop_signals()
    signal.signal(PREEMPTION_SIGNAL, signal.SIG_IGN)


def wait_for_ranks(timeout: float) -> bool:
    """Wait until the supervised node command has exited (the ranks saved and stopped); used by
    the SLURM task before submitit requeues the job. True when it exited in time."""
    proc = CURRENT
    if proc is None:
        return True
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


MARKER_WAIT_SECONDS = 30.0  # how long a node that exited cleanly waits for other nodes' markers


@dataclass(frozen=True)
class Verdict:
    state: str  # finished | failed | interrupted | refused
    exit_code: int  # what the launcher should exit with
    message: str
    report: tuple[str, ...] = ()  # printed under the message: the failing rank's last lines, ...


def supervise(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    attempt_dir: Path,
    node_rank: int,
    world_size: int,
    own_signals: bool,
) -> Verdict:
    """Run one node's command to the end and judge it. With ``own_signals`` (a local launch),
    Ctrl-C / SIGTERM / SIGHUP end the whole tree and the pre-emption signal is passed to the ranks;
    under SLURM, submitit keeps its own handlers and SLURM signals every process of the step itself.

    The command starts with the pre-emption signal ignored, so torchrun's agent survives it; the
    ranks install their own handler (save at the next step boundary, then stop). The output is
    copied by a thread, so the main thread can wait for the ranks while submitit checkpoints."""
    global CURRENT
    tree = ProcessTree()
    tree.become_subreaper()
    interrupted = forward_signals(tree) if own_signals else Interruption()
    early = pending_stop_signal() if own_signals else None
    if early is not None:
        release_stop_signals()
        return record_node(attempt_dir, node_rank, 128 + early, interrupted_before_start(early))
    exit_code = 1
    me = os.getpid()
    shown: console.Console | None = None
    screen: console.Screen | None = None
    log_path = attempt_dir / rundir.LOGS / f"node{node_rank}.log"
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**os.environ, **env, SUPERVISOR_PID: str(me)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: start_child(me),
        )
        CURRENT = proc
        tree.watch()
        if own_signals:
            release_stop_signals()  # a signal held until now is handled here, the tree known
        log = open(log_path, "ab")  # noqa: SIM115 (closed below)
        # The console (and rich, on a terminal) loads while the ranks start, not before.
        from launcher import console

        everything = console.wants_everything(os.environ)
        screen = console.Screen(sys.stdout, live=own_signals and sys.stdout.isatty() and not everything)
        shown = console.Console(
            attempt_dir, screen.show, screen.status if screen.live else None, everything, interrupted.is_set
        )
        copier = threading.Thread(target=stream, args=(proc.stdout, log, shown), daemon=True)
        copier.start()
        ticker = Ticker(shown)
        exit_code = proc.wait()
        tree.end_all()  # a straggler the agent left (or started as it died) would hold the output open
        copier.join(timeout=30)
        ticker.stop()
        shown.close()
        log.close()
    finally:
        CURRENT = None
        if screen is not None:
            screen.stop()
        tree.end_all()  # also when submitit's pre-emption handler raises SystemExit in here
    verdict = judge(attempt_dir, node_rank, world_size, exit_code, interrupted.signum)
    if verdict.state == "failed" and shown is not None:
        verdict = dataclasses.replace(verdict, report=tuple(shown.failure_report(log_path)))
    summary = shown.warnings_summary() if shown is not None else None
    with open(log_path, "a") as log_end:  # the log says how it ended, too
        log_end.write(f"ftlaunch: node {node_rank}: {verdict.message}\n")
    if summary is not None:
        verdict = dataclasses.replace(verdict, report=(*verdict.report, f"  {summary}"))
    return record_node(attempt_dir, node_rank, exit_code, verdict)


def interrupted_before_start(signum: int) -> Verdict:
    name = signal.Signals(signum).name
    return Verdict("interrupted", 128 + signum, f"interrupted ({name}) before any process started")


def record_node(attempt_dir: Path, node_rank: int, exit_code: int, verdict: Verdict) -> Verdict:
    rundir.write_json(
        attempt_dir / rundir.NODES / f"node{node_rank}.json",
        {"node_rank": node_rank, "host": os.uname().nodename, "exit_code": exit_code, "state": verdict.state},
    )
    return verdict


def judge(
    attempt_dir: Path, node_rank: int, world_size: int, exit_code: int, stopped_by: int | None = None
) -> Verdict:
    """Finished means every rank wrote its completion marker; the exit code alone is not trusted
    (DeepSpeed on CPU sometimes aborts at shutdown after training finished)."""
    clean = exit_code == 0 and stopped_by is None
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


def stream(source: IO[bytes] | None, log: IO[bytes], shown: console.Console) -> None:
    """Copy the workers' output (``[rankN]:``-prefixed by torchrun) to a log, whole, and hand each
    line to the console, which shows what matters (``launcher.console``). A console that went away
    (closed pipe, full disk) does not stop the copy to the log."""
    if source is None:
        return
    for line in iter(source.readline, b""):
        log.write(line)
        log.flush()
        shown.feed(line)


class Ticker:
    """Calls ``Console.tick`` twice a second: warnings leave their window, the progress line moves."""

    def __init__(self, shown: console.Console) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(shown,), daemon=True)
        self._thread.start()

    def _run(self, shown: console.Console) -> None:
        while not self._stop.wait(0.5):
            shown.tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


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
        with contextlib.suppress(OSError):
            name = signal.Signals(signum).name
            print(
                f"\nftlaunch: got {name}; stopping all processes (their last output: the run's logs/)",
                file=sys.stderr,
            )
        # SIGTERM whatever arrived: torchrun treats it like SIGINT, and a process still importing
        # ends quietly instead of printing a KeyboardInterrupt traceback into the console.
        threading.Thread(target=tree.end_all, daemon=True).start()

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

    def end_all(self, signum: int = signal.SIGTERM) -> None:
        """Signal every live process of the tree, wait a grace period, then kill what is left."""
        procs = self.send(signum)
        _, alive = self._psutil.wait_procs(procs, timeout=GRACE_SECONDS)
        for p in alive:
            with contextlib.suppress(self._psutil.Error):
                p.kill()
        self._psutil.wait_procs(alive, timeout=5)
        if signum == signal.SIGTERM:
            self._stop.set()
