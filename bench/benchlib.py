"""What the benchmarks share: the tiny model and its environment, ftlaunch's command, medians, and a
watcher that records when rank 0 reaches each phase of a launch.

Imported by the scripts beside it (``python bench/X.py`` puts this folder on ``sys.path``); it
imports only the standard library, so a script's ``--help`` stays instant.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
POLL_SECONDS = 0.05  # progress.json is rewritten in place: read it this often to see every phase


def ftlaunch(*argv: str) -> list[str]:
    return [sys.executable, "-m", "launcher", *argv]


def accelerate_launch(*argv: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *argv]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bytecode_as_installed() -> None:
    """Compile ftlaunch's own modules to bytecode first, as ``pip install`` does for an installed
    package and as Python does on first import unless ``PYTHONDONTWRITEBYTECODE`` is set (as on the
    machines we measure on): otherwise every process would recompile them (~0.06 s in the CLI, more
    per rank) while the libraries they are compared with load bytecode."""
    import compileall

    compileall.compile_dir(str(REPO / "launcher"), quiet=1)


def tiny_env(work: Path) -> dict[str, str]:
    """Offline, the tiny model built once into ``work/tiny`` (outside the user's cache), unbuffered
    output so that line times are the times things happened; ftlaunch's bytecode compiled."""
    bytecode_as_installed()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "FTLAUNCH_TINY_DIR": str(work / "tiny"),
    }
    subprocess.run(
        [sys.executable, str(JOBS / "make_tiny.py"), str(work / "tiny")],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def versions() -> str:
    """The libraries that decide the numbers, from their metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "deepspeed"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def machine() -> str:
    return f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file another process may be rewriting: {} while it is absent or half-written (the
    run folder's own reader; ``launcher.rundir`` imports only the standard library)."""
    from launcher.records.rundir import read_json_quiet

    return read_json_quiet(path)


def metrics(attempt: Path) -> list[dict[str, Any]]:
    path = attempt / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


class PhaseWatcher:
    """Polls ``runs/*/attempts/1/progress.json`` while a launch runs and keeps, per phase, the time
    rank 0 wrote it (the record's own ``time``), since each phase overwrites the one before."""

    def __init__(self, runs: Path) -> None:
        self.runs = runs
        self.phases: dict[str, float] = {}
        self.last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PhaseWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()  # the last phase, written just before the launch ended

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._read()

    def _read(self) -> None:
        for path in self.runs.glob("*/attempts/1/progress.json"):
            record = read_json(path)
            phase, when = record.get("phase"), record.get("time")
            if isinstance(phase, str) and isinstance(when, (int, float)):
                self.phases.setdefault(phase, float(when))
                self.last = record

    def first(self, prefix: str) -> float | None:
        """When the first phase starting with ``prefix`` was written (phases carry details)."""
        found = [t for name, t in self.phases.items() if name.startswith(prefix)]
        return min(found) if found else None
