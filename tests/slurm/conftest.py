"""One real SLURM cluster per test session (``cluster.sh``: two slurmd nodes on loopback).

Where SLURM cannot be started (not root, no apt), tests that need it are skipped with the reason;
in CI (``CI=true``) or with ``FTLAUNCH_REQUIRE_SLURM=1`` that is a failure instead, so the SLURM
backend is never silently untested.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CLUSTER = Path(__file__).with_name("cluster.sh")
REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until ``predicate`` gives something true (returned); SLURM and submitit are asynchronous."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("FTLAUNCH_REQUIRE_SLURM") == "1"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start the cluster once; yields its ``slurm.conf``. ``SLURM_CONF`` is set for the session."""
    folder = tmp_path_factory.mktemp("slurm")
    try:
        started = subprocess.run(
            ["bash", str(CLUSTER), "start", str(folder)], capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired as err:
        started = subprocess.CompletedProcess(err.cmd, 1, str(err.stdout or ""), "cluster.sh start timed out")
    if started.returncode != 0:
        subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], capture_output=True)
        reason = f"the SLURM test cluster did not start: {(started.stdout + started.stderr)[-1500:]}"
        if required():
            pytest.fail(reason)
        pytest.skip(reason)
    conf = folder / "slurm.conf"
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield conf
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def slurm_env(slurm_cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for ``ftlaunch --slurm`` runs: the cluster, offline, the tiny model prebuilt."""
    tiny = tmp_path_factory.mktemp("tiny") / "tiny-qwen2"
    env = {
        **os.environ,
        "SLURM_CONF": str(slurm_cluster),
        "HF_HUB_OFFLINE": "1",
        "FTLAUNCH_TINY_DIR": str(tiny),
        "TOKENIZERS_PARALLELISM": "false",
    }
    make_tiny = [sys.executable, str(REPO / "jobs" / "make_tiny.py"), str(tiny)]
    subprocess.run(make_tiny, env=env, check=True, capture_output=True)
    return env
