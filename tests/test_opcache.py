"""DeepSpeed's op build lock: a lock some process uses is a build in progress, a fresh one is not
judged yet, an unused old one is stale and named with its fix; an op cache that cannot be created is
refused; in a rank, a stop signal during a build releases the lock and a wait is never silent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from launcher.machine import opcache

OLD = opcache.QUIET_SECONDS + 60


def plant_lock(root: Path, op: str = "cpu_adam", age: float = OLD) -> Path:
    """A lock as an interrupted build leaves it: the folder and the lock last touched ``age`` ago."""
    lock = root / op / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    then = time.time() - age
    for path in (lock, lock.parent):
        os.utime(path, (then, then))
    return lock


@contextmanager
def process(code: str, cwd: Path | None = None) -> Iterator[None]:
    """A live Python process running ``code``, ready once it printed a line."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        yield
    finally:
        proc.kill()
        proc.wait()


def test_an_unused_old_lock_is_stale_and_named_with_its_fix(tmp_path: Path) -> None:
    lock = plant_lock(tmp_path)
    (problem,) = opcache.launch_problems({"TORCH_EXTENSIONS_DIR": str(tmp_path)})
    assert f"stale DeepSpeed op build lock {lock} " in problem and problem.endswith(f"rm {lock}")


def test_a_fresh_lock_is_not_called_stale_yet(tmp_path: Path) -> None:
    """Its build may be running where we cannot see it (another machine sharing the cache)."""
    plant_lock(tmp_path, age=0)
    assert opcache.launch_problems({"TORCH_EXTENSIONS_DIR": str(tmp_path)}) == []


def test_a_lock_some_process_holds_open_is_a_build_in_progress(tmp_path: Path) -> None:
    """torch's builder keeps the lock open from creating it to removing it."""
    lock = plant_lock(tmp_path)
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path)}
    hold = f"import os, time; fd = os.open({str(lock)!r}, os.O_RDONLY); print(1, flush=True); time.sleep(60)"
    with process(hold):
        assert opcache.launch_problems(env) == []
    assert opcache.launch_problems(env) != []


def test_a_process_working_in_the_build_folder_is_a_build_in_progress(tmp_path: Path) -> None:
    """ninja and the compilers run there; the lock is released when their builder is done."""
    lock = plant_lock(tmp_path)
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path)}
    with process("import time; print(1, flush=True); time.sleep(60)", cwd=lock.parent):
        assert opcache.launch_problems(env) == []
    assert opcache.launch_problems(env) != []


def test_the_default_cache_is_found_like_torch_finds_it(tmp_path: Path) -> None:
    lock = plant_lock(tmp_path / "cache" / "torch_extensions" / "py311_cpu")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert opcache.cache_root(env) == tmp_path / "cache" / "torch_extensions"
    assert [str(lock) in p for p in opcache.launch_problems(env)] == [True]
    assert opcache.cache_root({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "torch_extensions"
    assert opcache.launch_problems({"HOME": str(tmp_path)}) == []


def test_an_op_cache_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("a file where a folder must be")
    (problem,) = opcache.launch_problems({"HOME": str(tmp_path / "home")})
    assert f"{tmp_path / 'home'} is a file, not a folder" in problem and "set TORCH_EXTENSIONS_DIR" in problem
    (problem,) = opcache.launch_problems({"TORCH_EXTENSIONS_DIR": str(tmp_path / "home" / "ext")})
    assert f"op cache {tmp_path / 'home' / 'ext'} cannot be created" in problem


def test_a_stop_signal_during_a_build_releases_the_lock(tmp_path: Path) -> None:
    """torch's real ``_jit_compile`` with its build step replaced by a slow child: SIGTERM, twice as
    a rank gets it (supervisor and torchrun), ends the rank, lock removed, child ended. The first
    signal unwinds the build (exit 143); a second one that lands after the unwinding restored the
    default action ends the process by the signal itself: both are the stop the rank was asked for."""
    source = tmp_path / "op.cpp"
    source.write_text("int op;\n")
    build = tmp_path / "ext" / "op"
    build.mkdir(parents=True)
    builder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # As a rank does it: the guard is set up before torch's extension loader is imported.
            "import subprocess; from launcher.rank import opguard; "
            "opguard.guard_builds_once_loaded(); opguard.guard_builds_once_loaded(); "
            "import torch.utils.cpp_extension as ce; "
            "ce._write_ninja_file_and_build_library = lambda **kw: subprocess.run(['sleep', '60']); "
            f"ce.load('op', [{str(source)!r}], build_directory={str(build)!r})",
        ]
    )
    lock = build / "lock"
    try:
        deadline = time.monotonic() + 60
        while not psutil.Process(builder.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = psutil.Process(builder.pid).children()
        assert lock.exists()
        assert opcache.launch_problems({"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}) == []
        builder.send_signal(signal.SIGTERM)
        builder.send_signal(signal.SIGTERM)
        assert builder.wait(timeout=30) in (128 + signal.SIGTERM, -signal.SIGTERM)
    finally:
        builder.kill()
    assert not lock.exists()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_a_rank_waiting_on_a_lock_says_so_and_goes_on_when_it_goes(tmp_path: Path) -> None:
    lock = plant_lock(tmp_path)
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from launcher.rank import opguard; from torch.utils.file_baton import FileBaton; "
            f"opguard.guard_builds(); FileBaton({str(lock)!r}).wait()",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiter.stderr is not None
    first = waiter.stderr.readline()
    assert first.startswith(f"ftlaunch: waiting for the DeepSpeed op build in {lock.parent} (lock {lock});")
    assert f"rm {lock}" in first
    time.sleep(0.3)
    assert waiter.poll() is None, "it waits while the lock is there"
    lock.unlink()
    assert waiter.wait(timeout=30) == 0
    assert "op build" in waiter.stderr.read()
