"""DeepSpeed's op build cache: never left locked, never waited on in silence.

DeepSpeed builds its C++ ops on first use through torch's JIT extension loader, which guards each
build folder with a ``lock`` file (``torch.utils.file_baton``): created by the builder, removed in a
``finally`` when the build ends, and waited on, silently and forever, by everyone else. A builder
killed by SIGTERM never runs that ``finally``, so the lock stays and every later launch hangs.

So: in the ranks, a stop signal during a build unwinds through Python (the lock is released) and a
wait on someone else's lock is said on the console; before a launch, a lock that no process holds
is reported with the command that clears it, and an op cache that cannot be written is refused.
The launch-side half reads only the file system and /proc: it never imports torch.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WAIT_REPORT_SECONDS = 60.0  # the waiting line is repeated this often


def cache_root(env: Mapping[str, str]) -> Path:
    """Where torch builds extensions: ``$TORCH_EXTENSIONS_DIR``, else the user cache folder (what
    ``torch.utils.cpp_extension.get_default_build_root`` computes, plus a ``py3XY_cpu``-like
    folder we match with a wildcard)."""
    if env.get("TORCH_EXTENSIONS_DIR"):
        return Path(env["TORCH_EXTENSIONS_DIR"])
    cache = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(cache) / "torch_extensions"


def lock_files(env: Mapping[str, str]) -> list[Path]:
    root = cache_root(env)
    pattern = "*/lock" if env.get("TORCH_EXTENSIONS_DIR") else "*/*/lock"
    try:
        return sorted(root.glob(pattern)) if root.is_dir() else []
    except OSError:
        return []


def held_files() -> set[str]:
    """Every file some process on this machine has open (those we may look at)."""
    held: set[str] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                held.add(os.readlink(fd))
        except OSError:
            continue
    return held


def launch_problems(env: Mapping[str, str]) -> list[str]:
    """Before a DeepSpeed launch on this machine: an op cache we can build in, and no stale lock."""
    root = cache_root(env)
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                return [
                    f"DeepSpeed's op cache {root} cannot be written ({folder} is not a writable folder); "
                    "set TORCH_EXTENSIONS_DIR to a writable folder"
                ]
            break
    locks = lock_files(env)
    if not locks:
        return []
    held = held_files()
    return [
        f"stale DeepSpeed op build lock {lock} (left by an interrupted build; no process here holds it); "
        f"if no other machine is building this op, remove it: rm {lock}"
        for lock in locks
        if str(lock.resolve()) not in held
    ]


# ---------------------------------------------------------------- in the ranks


def guard_builds() -> None:
    """Make torch's JIT builds release their lock when stopped, and say when a rank waits on one."""
    import torch.utils.cpp_extension as cpp_extension
    from torch.utils.file_baton import FileBaton

    cpp_extension._jit_compile = unwinding_on_stop(cpp_extension._jit_compile)
    FileBaton.wait = announced(FileBaton.wait)  # type: ignore[method-assign,assignment]


def unwinding_on_stop(build: Callable[..., Any]) -> Callable[..., Any]:
    """During a build, a stop signal raises SystemExit(128 + signal): torch's ``finally`` then
    removes the lock (and ``subprocess.run`` kills the compiler). Outside builds the default
    actions stay, so a rank blocked in a collective still ends at once."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return build(*args, **kwargs)
        previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
        try:
            return build(*args, **kwargs)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    return guarded


def stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def announced(wait: Callable[[Any], None]) -> Callable[[Any], None]:
    """``FileBaton.wait`` that says what it waits for, now and every minute, instead of silence."""

    def waiting(baton: Any) -> None:
        path = Path(baton.lock_file_path)
        done = threading.Event()

        def report() -> None:
            while True:
                print(
                    f"ftlaunch: waiting for the DeepSpeed op build in {path.parent} (lock {path}); if no "
                    f"process is building it, stop and remove the lock: rm {path}",
                    file=sys.stderr,
                    flush=True,
                )
                if done.wait(WAIT_REPORT_SECONDS):
                    return

        threading.Thread(target=report, daemon=True).start()
        started = time.monotonic()
        try:
            wait(baton)
        finally:
            done.set()
        print(
            f"ftlaunch: the op build in {path.parent} is done ({time.monotonic() - started:.0f} s)",
            file=sys.stderr,
        )

    return waiting
