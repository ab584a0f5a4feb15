"""SIGTERM during DeepSpeed's first-use op build leaves no lock behind and no process; the next
launch is not blocked: it takes the lock and builds. The recipe builds cpu_adam the way a GPU run's
optimizer does (a CPU training run builds no op at all, even with --offload-optimizer cpu: checked,
its extensions folder stays empty); the rank that does not build says it waits. Each launch is
stopped while a compiler runs; the second stop checks the release again (a full cpu_adam build takes
~1.5-2 min on 2 cores, too long to wait for)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from launcher.machine import opcache
from launcher.records.runs import list_runs
from tests.e2e.test_faults import strays, wait_until

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent


def working_in(folder: Path) -> list[str]:
    """Live processes whose working folder is ``folder`` (ninja and the compilers of a build)."""
    found = []
    for p in psutil.process_iter(["cwd", "status", "cmdline"]):
        if p.info["cwd"] == os.path.realpath(folder) and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:120]}")
    return found


def leftovers(tmp_path: Path, lock: Path) -> list[str]:
    """Processes that outlived the launcher: any naming the test's folders, or working in the build."""
    return strays(tmp_path) + working_in(lock.parent)


def test_a_stopped_op_build_releases_its_lock(e2e_env: dict[str, str], tmp_path: Path) -> None:
    env = {**e2e_env, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    runs = str(tmp_path / "runs")
    argv = [
        sys.executable,
        "-m",
        "launcher",
        "--procs",
        "2",
        "--zero",
        "2",
        "--runs-dir",
        runs,
        str(HERE / "op_builder.py"),
    ]
    lock = tmp_path / "ext" / "cpu_adam" / "lock"
    waiting = f"ftlaunch: waiting for the DeepSpeed op build in {lock.parent} (lock {lock})"
    for launch in (1, 2):
        assert opcache.launch_problems(env) == []
        console = tmp_path / f"console{launch}.txt"
        with console.open("w") as out:
            launcher = subprocess.Popen(
                argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.PIPE, text=True
            )
        try:
            assert wait_until(lock.exists, 240), f"launch {launch}: the build never started"
            assert wait_until(lambda: working_in(lock.parent) != [], 60), f"launch {launch}: no compiler ran"
            said = wait_until(lambda c=console: waiting in c.read_text(), 120)
            assert said, f"launch {launch}: the waiting rank must say so on the console"
            launcher.send_signal(signal.SIGTERM)
            _, err = launcher.communicate(timeout=90)
        finally:
            launcher.kill()
        assert launcher.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert wait_until(lambda: not leftovers(tmp_path, lock), 15), leftovers(tmp_path, lock)
        assert not lock.exists(), f"launch {launch}: the lock was left behind"
    states = [run.state for run in list_runs(tmp_path / "runs")]
    assert states == ["interrupted", "interrupted"]
