"""The node supervisor: runs one node's ``accelerate launch`` and owns everything it starts.

Used by the local backend and by every SLURM node task alike. It spawns the node command, copies
its rank-prefixed output to the console and to ``logs/node{K}.log``, makes sure no process of the
tree outlives it (torchrun starts workers in new sessions, so a process-group kill misses them:
we become a child subreaper and keep a snapshot of every descendant), and judges the outcome from
the ranks' completion markers, not from the exit code alone.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from launcher.protocol import SUPERVISOR_PID
from launcher.records import rundir
from launcher.records.faultnode import silent_nodes
from launcher.records.verdict import Verdict, interrupted_before_start, judge, record_node
from launcher.run.nodelink import Link, PeerEnd
from launcher.run.stacks import process_state
from launcher.run.tree import (
    Interruption,
    ProcessTree,
    forward_signals,
    pending_stop_signal,
    release_stop_signals,
    start_child,
)
from launcher.run.watchdog import Watchdog
from launcher.spec.faults import DEFAULT_HANG_TIMEOUT

if TYPE_CHECKING:
    from launcher.run import console

CURRENT: subprocess.Popen[bytes] | None = None  # the node command being supervised, if any


def wait_for_ranks(timeout: float) -> bool:
    """Wait until the supervised node command has exited (the ranks saved and stopped); used by
    the SLURM task before submitit requeues the job. True when it exited in time."""
    proc = CURRENT
    if proc is None:
        return True
    # Not proc.wait(): this runs in submitit's signal handler, which interrupts the main thread
    # inside proc.wait(), whose lock it holds: a second wait could only time out. An exited
    # command is a zombie until that first wait reaps it.
    deadline = time.monotonic() + timeout
    while proc.returncode is None and process_state(proc.pid) not in ("zombie", "dead", None):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@dataclasses.dataclass
class Watched:
    """What following the node command left behind, also when it was cut short (``finally``)."""

    exit_code: int = 1
    shown: console.Console | None = None
    screen: console.Screen | None = None
    hang: list[str] = dataclasses.field(default_factory=list)  # the watchdog's report, if it ended the node
    peer: PeerEnd | None = None  # the other node that ended badly, if that ended this one


def supervise(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    attempt_dir: Path,
    node_rank: int,
    world_size: int,
    own_signals: bool,
    hang_timeout: float = DEFAULT_HANG_TIMEOUT,
    link: Link | None = None,
) -> Verdict:
    """Run one node's command to the end and judge it. With ``own_signals`` (a local launch),
    Ctrl-C / SIGTERM / SIGHUP end the whole tree and the pre-emption signal is passed to the ranks;
    under SLURM, submitit keeps its own handlers and SLURM signals every process of the step itself.

    The command starts with the pre-emption signal ignored, so torchrun's agent survives it; the
    ranks install their own handler (save at the next step boundary, then stop). The output is
    copied by a thread, so the main thread can wait for the ranks while submitit checkpoints. A
    watchdog ends the node when a rank stops making progress (``run/watchdog.py``), and the nodes'
    ``link`` when another node died or ended badly (``run/nodelink.py``)."""
    global CURRENT
    tree = ProcessTree()
    tree.become_subreaper()
    interrupted = forward_signals(tree) if own_signals else Interruption()
    early = stopped_early(interrupted) if own_signals else None
    if early is not None:
        return record_node(attempt_dir, node_rank, 128 + early, interrupted_before_start(early))
    watched = Watched()
    log_path = attempt_dir / rundir.LOGS / f"node{node_rank}.log"
    patience = PEER_PATIENCE_SECONDS if link is not None else 0.0
    watchdog = Watchdog(attempt_dir, node_rank, hang_timeout, tree.end_hung, patience)
    try:
        proc = spawn(argv, env, cwd)
        CURRENT = proc
        tree.watch()
        if own_signals:
            release_stop_signals()  # a signal held until now is handled here, the tree known
        if interrupted.is_set():  # handled between the check above and the spawn: nothing was ended
            threading.Thread(target=tree.end_all, daemon=True).start()
        watch_the_others(watchdog, link, node_rank, tree, watched)
        follow(proc, tree, log_path, attempt_dir, own_signals and sys.stdout.isatty(), interrupted, watched)
        watched.hang = watchdog.found
        hear_the_others(link if node_rank == 0 else None, watched)  # the head records the attempt
    finally:
        watchdog.stop()
        CURRENT = None
        if watched.screen is not None:
            watched.screen.stop()
        tree.end_all()  # also when submitit's pre-emption handler raises SystemExit in here
    return conclude(attempt_dir, node_rank, world_size, watched, interrupted.signum, log_path)


def stopped_early(interrupted: Interruption) -> int | None:
    """A stop signal held since the run folder was made, or one a library's thread (torch's, started
    before the signals were held) took already: then it is not pending, but its handler has run."""
    early = pending_stop_signal()
    early = early if early is not None else interrupted.signum
    if early is not None:
        release_stop_signals()
    return early


PEER_PATIENCE_SECONDS = 10.0  # a node whose ranks merely wait lets the culprit's node speak first
PEER_WORD_SECONDS = 5.0  # a node whose ranks failed waits this long to hear whether another failed first


def watch_the_others(
    watchdog: Watchdog, link: Link | None, node_rank: int, tree: ProcessTree, watched: Watched
) -> None:
    """This node's ranks (the watchdog) and, with other nodes, the link to them."""
    if link is not None:
        watchdog.on_found = lambda line: link.tell("hung", f"hung: {line}")
        link.watch(lambda end: end_for_peer(end, node_rank, watchdog, tree, watched))
    watchdog.start()


def hear_the_others(link: Link | None, watched: Watched) -> None:
    """The head's ranks failed by themselves: did another node fail first? Its word, which comes
    within seconds, may name the cause (``conclude`` decides). Only the head waits: the others
    say their word at once."""
    if link is not None and watched.exit_code != 0 and not watched.hang:
        watched.peer = watched.peer or link.wait_for_end(PEER_WORD_SECONDS)


def end_for_peer(
    end: PeerEnd, node_rank: int, watchdog: Watchdog, tree: ProcessTree, watched: Watched
) -> None:
    """Another node died or ended badly: this node's ranks would only wait for it inside a
    collective until gloo's or NCCL's timeout. Save where they wait, then end them now."""
    watched.peer = end
    print(
        f"ftlaunch: node {node_rank}: {end.describe()}; ending this node's processes",
        file=sys.stderr,
        flush=True,
    )
    watchdog.dump_stacks()
    tree.end_hung()


def spawn(argv: Sequence[str], env: Mapping[str, str], cwd: str) -> subprocess.Popen[bytes]:
    """The node command in its own session, told who supervises it, its output piped to us."""
    me = os.getpid()
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env={**os.environ, **env, SUPERVISOR_PID: str(me)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: start_child(me),
    )


def follow(
    proc: subprocess.Popen[bytes],
    tree: ProcessTree,
    log_path: Path,
    attempt_dir: Path,
    live: bool,
    interrupted: Interruption,
    watched: Watched,
) -> None:
    """Copy the output to the log and the console until the command exits; ``live``: a terminal
    we own, where the progress line redraws in place."""
    log = open(log_path, "ab")  # noqa: SIM115 (closed below)
    # The console (and rich, on a terminal) loads while the ranks start, not before.
    from launcher.run import console

    everything = console.wants_everything(os.environ)
    watched.screen = screen = console.Screen(sys.stdout, live=live and not everything)
    watched.shown = shown = console.Console(
        attempt_dir, screen.show, screen.status if screen.live else None, everything, interrupted.is_set
    )
    copier = threading.Thread(target=stream, args=(proc.stdout, log, shown), daemon=True)
    copier.start()
    ticker = Ticker(shown)
    watched.exit_code = proc.wait()
    tree.end_all()  # a straggler the agent left (or started as it died) would hold the output open
    copier.join(timeout=30)
    ticker.stop()
    shown.close()
    log.close()


def conclude(
    attempt_dir: Path, node_rank: int, world_size: int, watched: Watched, signum: int | None, log_path: Path
) -> Verdict:
    """Judge the node from the ranks' markers, add the failing rank's last words and the warnings
    summary, say it at the end of the node's log and record it."""
    shown = watched.shown
    cut_short = watched.peer is not None or bool(watched.hang)
    verdict = judge(attempt_dir, node_rank, world_size, watched.exit_code, signum, cut_short)
    peer = watched.peer
    if peer is not None and not watched.hang and verdict.state in ("failed", "interrupted"):
        own = verdict
        verdict = for_peer(attempt_dir, peer)
        if own.state == "failed" and not started_there(attempt_dir, peer, world_size):
            verdict = dataclasses.replace(own, report=(*own.report, f"  and {peer.describe()}"))
    elif watched.hang and verdict.state == "failed":
        stacks = attempt_dir / rundir.LOGS / rundir.STACKS
        report = (*(f"  {line}" for line in watched.hang[1:]), f"  every rank's stack: {stacks}")
        verdict = Verdict("hung", 1, f"hung: {watched.hang[0]}", report)
    elif verdict.state == "failed" and shown is not None:
        verdict = dataclasses.replace(verdict, report=tuple(shown.failure_report(log_path)))
    summary = shown.warnings_summary() if shown is not None else None
    with open(log_path, "a") as log_end:  # the log says how it ended, too
        log_end.write(f"ftlaunch: node {node_rank}: {verdict.message}\n")
    if summary is not None:
        verdict = dataclasses.replace(verdict, report=(*verdict.report, f"  {summary}"))
    return record_node(attempt_dir, node_rank, watched.exit_code, verdict, cut_short)


def started_there(attempt_dir: Path, end: PeerEnd, world_size: int) -> bool:
    """Both nodes failed: was it the other's doing? Yes when it was lost or hung, or when one of its
    ranks died without a word (no completion marker, no error of its own: killed), while the ranks
    that merely lost their peers raise the collective library's errors."""
    return end.state in ("lost", "hung") or end.node in silent_nodes(attempt_dir, world_size)


def for_peer(attempt_dir: Path, end: PeerEnd) -> Verdict:
    """This node was ended because of another: the verdict names that node and what it said."""
    if end.state == "lost":
        return Verdict(
            "failed",
            1,
            f"failed: {end.describe()}",
            (f"  its log: {attempt_dir / rundir.LOGS}/node{end.node}.log",),
        )
    said = rundir.read_json_quiet(attempt_dir / rundir.HANGS / f"node{end.node}.json")
    lines = said.get("lines", []) if end.state == "hung" else []
    if lines:  # the culprit's node's full report (written after its notice, with the stacks)
        end = dataclasses.replace(end, message=f"hung: {lines[0]}")
    report = [f"  {line}" for line in lines[1:]]
    report.append(f"  node {end.node}'s log: {attempt_dir / rundir.LOGS}/node{end.node}.log")
    if end.state == "hung":
        report.append(f"  every rank's stack: {attempt_dir / rundir.LOGS / rundir.STACKS}")
    state = "hung" if end.state == "hung" else "failed"
    return Verdict(
        state,
        1,
        end.describe(),
        tuple(report),
    )


def stream(source: IO[bytes] | None, log: IO[bytes], shown: console.Console) -> None:
    """Copy the workers' output (``[rankN]:``-prefixed by torchrun) to a log, whole, and hand each
    line to the console, which shows what matters (``run/console.py``). A console that went away
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
