"""DeepSpeed's op build lock: a held lock is a build in progress, an unheld one is stale and named
with its fix, an unwritable cache is refused, and a rank never waits on a lock in silence."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from launcher import opcache


def plant_lock(root: Path, op: str = "cpu_adam") -> Path:
    lock = root / op / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    return lock


def test_an_unheld_lock_is_stale_and_named_with_its_fix(tmp_path: Path) -> None:
    lock = plant_lock(tmp_path)
    (problem,) = opcache.launch_problems({"TORCH_EXTENSIONS_DIR": str(tmp_path)})
    assert str(lock) in problem and f"rm {lock}" in problem


def test_a_lock_some_process_holds_is_a_build_in_progress(tmp_path: Path) -> None:
    lock = plant_lock(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, time; fd = os.open({str(lock)!r}, os.O_RDONLY); print(1, flush=True); time.sleep(9)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        assert opcache.launch_problems({"TORCH_EXTENSIONS_DIR": str(tmp_path)}) == []
    finally:
        holder.kill()
        holder.wait()
    assert opcache.launch_problems({"TORCH_EXTENSIONS_DIR": str(tmp_path)}) != []


def test_the_default_cache_is_found_like_torch_finds_it(tmp_path: Path) -> None:
    lock = plant_lock(tmp_path / "cache" / "torch_extensions" / "py311_cpu")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert opcache.cache_root(env) == tmp_path / "cache" / "torch_extensions"
    assert [str(lock) in p for p in opcache.launch_problems(env)] == [True]
    assert opcache.cache_root({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "torch_extensions"


def test_an_op_cache_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("a file where a folder must be")
    (problem,) = opcache.launch_problems({"HOME": str(tmp_path / "home")})
    assert "TORCH_EXTENSIONS_DIR" in problem and "home" in problem


def test_a_rank_waiting_on_a_lock_says_so_and_goes_on_when_it_goes(tmp_path: Path) -> None:
    lock = plant_lock(tmp_path)
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from launcher import opcache; from torch.utils.file_baton import FileBaton; "
            f"opcache.guard_builds(); FileBaton({str(lock)!r}).wait()",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiter.stderr is not None
    first = waiter.stderr.readline()
    assert "waiting for the DeepSpeed op build" in first and f"rm {lock}" in first
    time.sleep(0.3)
    assert waiter.poll() is None, "it waits while the lock is there"
    lock.unlink()
    assert waiter.wait(timeout=30) == 0
    assert "op build" in waiter.stderr.read()
