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

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from launcher import rundir

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WAIT_REPORT_SECONDS = 60.0  # the waiting line is repeated this often
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


# ---------------------------------------------------------------- in the ranks


CPP_EXTENSION = "torch.utils.cpp_extension"


def guard_builds_once_loaded() -> None:
    """``guard_builds`` as soon as something loads torch's extension loader, not before. DeepSpeed
    loads it only to build or load an op, and importing it (with setuptools) costs ~0.1 s per rank:
    a launch that needs no op (ZeRO on CPU with torch's optimizer) should not pay for the guard."""
    if CPP_EXTENSION in sys.modules:
        guard_builds()
    elif not any(isinstance(finder, GuardOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, GuardOnImport())


class GuardOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when torch's extension loader is imported, it lets the other finders
    find it and guards it right after the module has run, before the importer gets it."""

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != CPP_EXTENSION:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run_module = loader.exec_module

        def run_then_guard(module: Any) -> None:
            run_module(module)
            guard_builds()

        loader.exec_module = run_then_guard  # type: ignore[method-assign]
        return spec


def guard_builds() -> None:
    """Make torch's JIT builds release their lock when stopped, and say when a rank waits on one.
    Idempotent."""
    from torch.utils.file_baton import FileBaton

    # Read from sys.modules: called from GuardOnImport, the module is loaded but not yet an
    # attribute of torch.utils.
    if CPP_EXTENSION not in sys.modules:
        importlib.import_module(CPP_EXTENSION)
    cpp_extension: Any = sys.modules[CPP_EXTENSION]

    if getattr(cpp_extension._jit_compile, GUARDED, False):
        return
    cpp_extension._jit_compile = unwinding_on_stop(cpp_extension._jit_compile)
    FileBaton.wait = announced(FileBaton.wait)  # type: ignore[method-assign,assignment]


GUARDED = "_ftlaunch_guarded"


def unwinding_on_stop(build: Callable[..., Any]) -> Callable[..., Any]:
    """During a build, a stop signal raises SystemExit(128 + signal): torch's ``finally`` then
    removes the lock (and ``subprocess.run`` kills the compiler). Only the first signal raises: a
    rank gets SIGTERM from both the supervisor and torchrun's agent, and a second exception raised
    inside torch's ``finally`` would skip the release. Outside builds the previous actions stay
    (the default: a rank blocked in a collective still ends at once)."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return build(*args, **kwargs)
        stopping: list[int] = []

        def stop(signum: int, _frame: object) -> None:
            if not stopping:
                stopping.append(signum)
                raise SystemExit(128 + signum)

        previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
        name = kwargs.get("name", args[0] if args else "an")
        print(
            f"ftlaunch: building DeepSpeed's {name} op for this machine (one-time; usually 1-3 minutes;"
            f" cached in {cache_root(os.environ)}, then reused by every launch)",
            file=sys.stderr,
            flush=True,
        )
        started = time.monotonic()
        try:
            return build(*args, **kwargs)
        finally:
            for s, handler in previous.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)
            seconds = time.monotonic() - started
            print(f"ftlaunch: the {name} op build ended ({seconds:.0f} s)", file=sys.stderr)

    setattr(guarded, GUARDED, True)
    return guarded


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
