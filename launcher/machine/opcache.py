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
import time
from collections.abc import Mapping
from pathlib import Path

from launcher.records import rundir

# A build folder touched this recently may be building on a machine (or in a container) whose
# processes we cannot see: its lock is not called stale yet. Every compiled object, the ninja log
# and the lock itself touch it; a local build is recognised at any age by its processes.
QUIET_SECONDS = 300.0


def cache_root(env: Mapping[str, str]) -> Path:
    """Where torch builds extensions, as ``torch.utils.cpp_extension._get_build_directory`` decides:
    ``$TORCH_EXTENSIONS_DIR`` if set at all (even empty: then relative to the working folder), else
    ``realpath(user_cache_dir("torch_extensions"))``, below which torch adds a ``py3XY_cpu``-like
    folder that only an imported torch can name (we match it with a wildcard)."""
    if "TORCH_EXTENSIONS_DIR" in env:
        return Path(env["TORCH_EXTENSIONS_DIR"])
    # torch's appdirs: os.getenv("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    cache = env["XDG_CACHE_HOME"] if "XDG_CACHE_HOME" in env else os.path.join(home(env), ".cache")
    return Path(os.path.realpath(os.path.join(cache, "torch_extensions")))


def home(env: Mapping[str, str]) -> str:
    """``os.path.expanduser("~")`` for ``env``: ``$HOME`` if set, else the password database."""
    if "HOME" in env:
        return env["HOME"].rstrip("/") or "/"
    import pwd

    return pwd.getpwuid(os.getuid()).pw_dir


def lock_files(env: Mapping[str, str]) -> list[Path]:
    root = cache_root(env)
    pattern = "*/lock" if "TORCH_EXTENSIONS_DIR" in env else "*/*/lock"
    try:
        return sorted(root.glob(pattern)) if root.is_dir() else []
    except OSError:
        return []


def in_use() -> tuple[set[str], list[str]] | None:
    """Every file some process here has open, and every process's working folder (those we may
    look at); None where there is no /proc to ask."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    held: set[str] = set()
    cwds: list[str] = []
    for pid in proc.glob("[0-9]*"):
        try:
            cwds.append(os.readlink(pid / "cwd"))
            for fd in (pid / "fd").iterdir():
                held.add(os.readlink(fd))
        except OSError:
            continue
    return held, cwds


def last_touched(folder: Path) -> float:
    """The newest modification time of ``folder`` and what it directly holds."""
    newest = 0.0
    for path in (folder, *folder.iterdir()):
        try:
            newest = max(newest, path.lstat().st_mtime)
        except OSError:
            continue
    return newest


def stale_locks(env: Mapping[str, str], now: float | None = None) -> list[Path]:
    """Locks no build will ever release: no process here holds the lock open (torch's builder
    keeps it open for the whole build) or works inside its folder (ninja and the compilers do),
    and the folder has been quiet for ``QUIET_SECONDS``."""
    locks = lock_files(env)
    if not locks:
        return []
    seen = in_use()
    if seen is None:
        return []  # no way to tell a build in progress from a dead one: say nothing
    held, cwds = seen
    now = time.time() if now is None else now
    stale = []
    for lock in locks:
        folder = os.path.realpath(lock.parent)
        if os.path.realpath(lock) in held:
            continue
        if any(cwd == folder or cwd.startswith(folder + os.sep) for cwd in cwds):
            continue
        try:
            if now - last_touched(lock.parent) < QUIET_SECONDS:
                continue
        except OSError:
            continue  # gone while we looked: released
        stale.append(lock)
    return stale


def launch_problems(env: Mapping[str, str]) -> list[str]:
    """Before a DeepSpeed launch on this machine: an op cache we can build in, and no stale lock.
    Reads only the file system and /proc (never imports torch)."""
    root = cache_root(env)
    why = rundir.blocked_folder(root)
    if why:
        return [
            f"DeepSpeed's op cache {root} cannot be created or written ({why}); "
            "set TORCH_EXTENSIONS_DIR to a writable folder"
        ]
    return [
        f"stale DeepSpeed op build lock {lock} (left by an interrupted build; no process here uses it); "
        f"if no other machine is building this op, remove it: rm {lock}"
        for lock in stale_locks(env)
    ]
