"""DeepSpeed's op builds in the ranks: one rank builds while the others wait (torch's file lock),
a wait is announced, and a build cut short by a stop signal removes its lock instead of leaving
every later launch waiting on it."""

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.machine.opcache import cache_root
from launcher.protocol import STOP_SIGNALS

WAIT_REPORT_SECONDS = 60.0  # the waiting line is repeated this often


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
