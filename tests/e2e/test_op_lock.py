"""SIGTERM during DeepSpeed's first-use op build leaves no lock behind and no process; the next
launch is not blocked: it takes the lock and builds. The recipe builds cpu_adam the way a GPU run's
optimizer does (a CPU training run builds no op at all); the rank that does not build says it
waits. The second build is stopped the same way, which checks the release a second time (a full
build takes ~80 s on 2 cores)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import opcache, rundir
from tests.e2e.test_faults import strays, wait_until

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent


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
    for launch in (1, 2):
        assert opcache.launch_problems(env) == []
        launcher = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            assert wait_until(lock.exists, 240), f"launch {launch}: the build never started"
            wait_until(lambda: False, 2)  # well into the compiler
            launcher.send_signal(signal.SIGTERM)
            _, err = launcher.communicate(timeout=90)
        finally:
            launcher.kill()
        assert launcher.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert wait_until(lambda: strays(tmp_path) == [], 15), strays(tmp_path)
        assert not lock.exists(), f"launch {launch}: the lock was left behind"
    states = [run.state for run in rundir.list_runs(tmp_path / "runs")]
    assert states == ["interrupted", "interrupted"]
    logs = [
        (p / "logs" / "node0.log").read_text()
        for p in (r.latest.path for r in rundir.list_runs(runs) if r.latest)
    ]
    assert all("waiting for the DeepSpeed op build" in log for log in logs), "the waiting rank must say so"
