"""Ctrl-C or SIGTERM to ftlaunch ends every process it started: torchrun and its workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher import rundir

HERE = Path(__file__).parent

pytestmark = pytest.mark.e2e


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_leaves_no_process_behind(signum: int, tmp_path: Path) -> None:
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher",
            "--procs",
            "2",
            "--runs-dir",
            str(tmp_path / "runs"),
            str(HERE / "sleeper.py"),
            str(pids_dir),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(lambda: len(list(pids_dir.glob("*.pid"))) == 2, 120, "both workers to start")
        workers = [int(p.read_text()) for p in pids_dir.glob("*.pid")]
        tree = [p.pid for p in psutil.Process(launcher.pid).children(recursive=True)]
        assert set(workers) <= set(tree)
        os.kill(launcher.pid, signum)
        code = launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    alive = [pid for pid in tree if is_alive(pid)]
    assert alive == [], f"processes left behind: {alive}"
    assert code != 0
    (run,) = rundir.list_runs(tmp_path / "runs")
    assert run.state == "interrupted"
