"""Local backend: ``accelerate launch`` on this machine, its whole process tree owned by us.

``plan`` is pure (argv and environment); ``run`` does the work: writes the run folder, spawns,
streams rank-prefixed output into the console and ``logs/``, forwards Ctrl-C / SIGTERM to every
descendant (torchrun starts workers in new sessions, so a process-group kill misses them) and
reports the outcome from the ranks' completion markers, not from the exit code alone.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from launcher import rundir
from launcher.errors import SpecError
from launcher.render import ACCELERATE_FILE, DEEPSPEED_FILE, render_all, texts
from launcher.rules import Resolved, hardware_problems
from launcher.spec import to_dict

GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Plan:
    run_dir: Path
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def shell_command(self) -> str:
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"{assignments} {shlex.join(self.argv)}".strip()


def plan(resolved: Resolved, run_dir: Path, port: int) -> Plan:
    """The exact command and environment; pure, so ``--dry-run`` shows what ``run`` executes."""
    spec = resolved.spec
    assert spec.recipe is not None
    layout = ["--config_file", str(run_dir / ACCELERATE_FILE), "--main_process_port", str(port)]
    # torchrun's tee: per-rank files under logs/ and a [rankN]: prefix on every console line.
    logs = ["--tee", "3", "--log_dir", str(run_dir / rundir.LOGS), "--role", "rank"]
    entry = ["-m", "launcher.entry", "--run-dir", str(run_dir), spec.recipe, *spec.args]
    argv = (sys.executable, "-m", "accelerate.commands.launch", *layout, *logs, *entry)
    env = {"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""} if spec.topology.on_cpu else {}
    return Plan(run_dir, argv, env)


def local_problems(resolved: Resolved) -> list[str]:
    from launcher.hardware import probe

    problems = hardware_problems(resolved.spec, probe())
    if resolved.spec.topology.nodes > 1:
        problems.append(
            f"--nodes {resolved.spec.topology.nodes}: a local launch runs on this machine only; "
            "use --nodes 1 (multi-node runs go through SLURM)"
        )
    return problems


def preflight(resolved: Resolved) -> None:
    problems = local_problems(resolved)
    if problems:
        raise SpecError(problems)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- side effects


def write_run_files(resolved: Resolved, the_plan: Plan) -> None:
    run_dir = the_plan.run_dir
    rendered = render_all(resolved, deepspeed_path=str(run_dir / DEEPSPEED_FILE))
    rundir.write_json(run_dir / rundir.SPEC, to_dict(resolved.spec))
    for name, text in texts(rendered).items():
        rundir.write_atomic(run_dir / name, text)
    command = f"cd {shlex.quote(os.getcwd())}\n{the_plan.shell_command()}\n"
    rundir.write_atomic(run_dir / rundir.COMMAND, command)
    rundir.write_json(run_dir / rundir.ENV, rundir.recorded_env({**os.environ, **the_plan.env}))


def run(resolved: Resolved, run_dir: Path) -> int:
    the_plan = plan(resolved, run_dir, free_port())
    write_run_files(resolved, the_plan)
    print(f"ftlaunch: run folder {run_dir}", file=sys.stderr)
    rundir.update_status(
        run_dir,
        state="running",
        launcher_pid=os.getpid(),
        started=time.time(),
        world_size=resolved.world_size,
        expected=resolved.batch.describe(),
    )
    tree = ProcessTree()
    tree.become_subreaper()
    interrupted = forward_signals(tree)  # before spawning: no window where a signal orphans workers
    proc = subprocess.Popen(
        the_plan.argv,
        env={**os.environ, **the_plan.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    tree.watch()
    with open(run_dir / rundir.LOGS / "launcher.log", "ab") as log:
        stream(proc.stdout, log)
    exit_code = proc.wait()
    tree.end_all()
    return report(resolved, run_dir, exit_code, interrupted.is_set())


def stream(source: IO[bytes] | None, log: IO[bytes]) -> None:
    """Copy the workers' output (``[rankN]:``-prefixed by torchrun's tee) to the console and a log."""
    if source is None:
        return
    out = sys.stdout.buffer
    for line in iter(source.readline, b""):
        log.write(line)
        out.write(line)
        out.flush()


def forward_signals(tree: ProcessTree) -> threading.Event:
    """On Ctrl-C / SIGTERM / SIGHUP: pass the signal to every process of the tree, then end them."""
    interrupted = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if interrupted.is_set():
            return
        interrupted.set()
        print(f"\nftlaunch: got {signal.Signals(signum).name}; stopping all processes", file=sys.stderr)
        threading.Thread(target=tree.end_all, args=(signum,), daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    return interrupted


def report(resolved: Resolved, run_dir: Path, exit_code: int, interrupted: bool) -> int:
    done = rundir.completed_ranks(run_dir)
    finished = len(done) == resolved.world_size
    effective = rundir.read_json(run_dir / rundir.EFFECTIVE) if (run_dir / rundir.EFFECTIVE).exists() else {}
    state = "finished" if finished else ("interrupted" if interrupted else "failed")
    status = rundir.update_status(
        run_dir,
        state=state,
        exit_code=exit_code,
        ended=time.time(),
        completed_ranks=len(done),
        effective=effective.get("summary", ""),
    )
    if finished and exit_code != 0:
        rundir.update_status(run_dir, shutdown_crash=True)
        print(
            f"ftlaunch: training finished on all {len(done)} ranks, but a process crashed at "
            f"shutdown (exit {exit_code}); checkpoints and outputs are complete. Run folder: {run_dir}",
            file=sys.stderr,
        )
        return 0
    print(
        f"ftlaunch: run {status['state']} (exit {exit_code}, {len(done)}/{resolved.world_size} ranks "
        f"completed). Run folder: {run_dir}",
        file=sys.stderr,
    )
    error = run_dir / rundir.ENTRY_ERROR
    if not finished and error.exists():
        # The recipe's arguments contradicted the spec: the same "bad input" exit code as the CLI.
        print(error.read_text(), file=sys.stderr, end="")
        return 2
    return 0 if finished else (exit_code or 1)


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

    def end_all(self, signum: int = signal.SIGTERM) -> None:
        """Signal every live process of the tree, wait a grace period, then kill what is left."""
        self._snapshot()
        with self._lock:
            procs = [p for p in self._known.values() if p.is_running()]
        for p in procs:
            with contextlib.suppress(self._psutil.Error):
                p.send_signal(signum)
        _, alive = self._psutil.wait_procs(procs, timeout=GRACE_SECONDS)
        for p in alive:
            with contextlib.suppress(self._psutil.Error):
                p.kill()
        self._psutil.wait_procs(alive, timeout=5)
        if signum == signal.SIGTERM:
            self._stop.set()
