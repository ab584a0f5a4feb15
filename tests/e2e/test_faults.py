"""Faults around a real launch (2 CPU processes): a console that goes away, the launcher killed
outright, a stop signal while training and at every early moment. Whatever happens, no process
outlives the launcher (checked in the process table), the run folder records the outcome, and the
next launch works."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.records import rundir
from launcher.records.runs import RunInfo, list_runs

HERE = Path(__file__).parent
LINES = 30

pytestmark = pytest.mark.e2e


def launch_argv(runs: Path, recipe: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "launcher",
        "--procs",
        "2",
        "--runs-dir",
        str(runs),
        str(HERE / recipe),
        *args,
    ]


def strays(marker: Path) -> list[str]:
    """Live processes whose command line names ``marker`` (every process of a launch does)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if str(marker) in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid():
            found.append(f"{p.pid}: {cmdline[:120]}")
    return found


def wait_until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def only_run(runs: Path) -> RunInfo:
    (run,) = list_runs(runs)
    return run


@pytest.mark.parametrize("console", ["| head -n 3", "> /dev/full"])
def test_a_console_that_goes_away_does_not_end_supervision(console: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    command = " ".join(f"'{a}'" for a in launch_argv(runs, "talker.py", str(LINES)))
    shell = subprocess.run(
        ["bash", "-c", f'{command} {console}; echo "exit=${{PIPESTATUS[0]}}" >&2'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "exit=0" in shell.stderr, shell.stderr[-2000:]
    assert strays(tmp_path) == []
    run = only_run(runs)
    assert run.state == "finished"
    log = (run.latest.path / rundir.LOGS / "node0.log").read_text()  # type: ignore[union-attr]
    assert all(f"line {LINES - 1} of rank {r}" in log for r in (0, 1)), "the log must have every line"


def start_sleepers(tmp_path: Path) -> tuple[subprocess.Popen[bytes], set[int]]:
    """A launch whose two workers wait to be stopped; returned once both run, with their pids."""
    pids = tmp_path / "pids"
    pids.mkdir()
    launcher = subprocess.Popen(
        launch_argv(tmp_path / "runs", "sleeper.py", str(pids)),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if not wait_until(lambda: len(list(pids.glob("*.pid"))) == 2, 120):
        with_pgid_killed(launcher.pid)
        raise AssertionError("the workers did not start")
    return launcher, {int(p.read_text()) for p in pids.glob("*.pid")}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_training_ends_every_process(signum: int, tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM once the workers run (torchrun moved them to sessions of their own)."""
    launcher, workers = start_sleepers(tmp_path)
    try:
        assert workers <= {p.pid for p in psutil.Process(launcher.pid).children(recursive=True)}
        launcher.send_signal(signum)
        code = launcher.wait(timeout=60)
    finally:
        with_pgid_killed(launcher.pid)
    assert code == 128 + signum
    assert wait_until(lambda: strays(tmp_path) == [], 15), strays(tmp_path)
    assert only_run(tmp_path / "runs").state == "interrupted"


def test_launcher_killed_outright_takes_its_run_down(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer) leaves no handler to run: the kernel ends the children."""
    launcher, _ = start_sleepers(tmp_path)
    try:
        launcher.kill()
        launcher.wait(timeout=10)
        assert wait_until(lambda: strays(tmp_path) == [], 30), strays(tmp_path)
    finally:
        with_pgid_killed(launcher.pid)
    run = only_run(tmp_path / "runs")
    assert run.state == "lost"  # the launcher's pid is gone and nothing recorded an end
    shown = subprocess.run(
        [sys.executable, "-m", "launcher", "status", str(run.path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert shown.returncode == 0 and "lost" in shown.stdout and "resume" in shown.stdout, shown.stdout


def with_pgid_killed(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def test_interrupt_at_every_early_moment_is_recorded(tmp_path: Path) -> None:
    """From interpreter start to the workers running: exit 128+signal, no process left, and the
    run folder (once it exists) says interrupted, never stuck in 'running'."""
    runs = tmp_path / "runs"
    pids = tmp_path / "pids"
    pids.mkdir()
    moments = (0.05, 0.2, 0.35, 0.5, 0.8, 1.2, 2.0, 3.5)
    for delay, signum in zip(moments, [signal.SIGINT, signal.SIGTERM] * 4, strict=True):
        launcher = subprocess.Popen(
            launch_argv(runs, "sleeper.py", str(pids)),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        launcher.send_signal(signum)
        try:
            _, err = launcher.communicate(timeout=60)
        finally:
            launcher.kill()
        # -signum: the signal came before Python could install any handler (nothing written yet)
        assert launcher.returncode in (128 + signum, -signum), (delay, launcher.returncode, err[-1500:])
        if "run folder" in err:
            assert "Traceback" not in err, (delay, err[-3000:])
        assert wait_until(lambda: strays(tmp_path) == [], 15), (delay, strays(tmp_path))
    states = [run.state for run in list_runs(runs)]
    assert states and set(states) == {"interrupted"}, states
    shell = subprocess.run(launch_argv(runs, "talker.py", "3"), cwd=tmp_path, capture_output=True, text=True)
    assert shell.returncode == 0, shell.stderr[-2000:]
