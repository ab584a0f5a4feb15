"""Reading runs back: find one by name, list them, and tell what each attempt's state really is
(a ``running`` status whose launcher died is shown as such). Used by status, logs, cancel, resume."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.records.rundir import RUN, SPEC, STATUS, attempt_numbers, attempt_path, read_json


def find_run(runs_dir: str | Path, name: str) -> Path:
    """A run given as a folder path, or as its folder name (or a unique prefix of it) under runs_dir."""
    direct = Path(name)
    if (direct / SPEC).is_file():
        return direct
    root = Path(runs_dir)
    matches = [p for p in sorted(root.glob(f"{glob_escape(name)}*")) if (p / SPEC).is_file()]
    exact = [p for p in matches if p.name == name]
    if exact or len(matches) == 1:
        return (exact or matches)[0]
    if not matches:
        raise LookupError(f"no run {name!r} (not a run folder, and nothing under {root}/ starts with it)")
    raise LookupError(
        f"{name!r} matches {len(matches)} runs under {root}/: " + ", ".join(p.name for p in matches)
    )


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


@dataclass(frozen=True)
class Attempt:
    number: int
    path: Path
    status: dict[str, Any]

    @property
    def state(self) -> str:
        """The recorded state, except that a "running" local attempt whose launcher is gone (or whose
        pid now belongs to a later process) is "lost"."""
        state = str(self.status.get("state", "unknown"))[:40]
        if state == "running" and "launcher_pid" in self.status and not self.launcher_alive:
            return "lost"
        return state

    @property
    def launcher_alive(self) -> bool:
        return launcher_alive(self.status.get("launcher_pid"), self.status.get("started"))

    @property
    def why_lost(self) -> str:
        run = self.path.parent.parent
        return (
            f"the launcher (pid {self.status.get('launcher_pid')}) ended without recording an outcome "
            f"(killed?); continue with: ftlaunch resume {run}"
        )


@dataclass(frozen=True)
class RunInfo:
    path: Path
    run: dict[str, Any]
    attempts: list[Attempt]
    problems: list[str]  # unreadable files, reported next to the run instead of failing the listing

    @property
    def latest(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def state(self) -> str:
        if self.latest:
            return self.latest.state
        return "unreadable" if self.problems else "unknown"

    @property
    def job_ids(self) -> list[str]:
        ids = self.run.get("job_ids", [])
        return [str(j) for j in ids] if isinstance(ids, list) else []

    @property
    def created(self) -> float:
        value = self.run.get("created", 0)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 1 << 22


def launcher_alive(pid: Any, started: Any) -> bool:
    """Is the recorded launcher still running? Only a plausible pid counts, and only if that
    process is not younger than the attempt (a recycled pid belongs to someone else)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 1 < pid <= pid_max():
        return False
    import psutil

    try:
        born = psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return False
    if isinstance(started, (int, float)) and not isinstance(started, bool):
        return born <= started + 2.0
    return True


def read_run(path: Path) -> RunInfo:
    """The run's records, each read tolerantly: whatever cannot be read becomes a noted problem."""
    try:
        return _read_run(path)
    except (OSError, ValueError) as err:
        return RunInfo(path, {}, [], [f"{path}: unreadable ({str(err)[:120]})"])


def _read_run(path: Path) -> RunInfo:
    problems: list[str] = []
    run = _read_or_note(path / RUN, problems)
    attempts = [Attempt(n, attempt_path(path, n), _status(path, n, problems)) for n in attempt_numbers(path)]
    return RunInfo(path, run, attempts, problems)


def _status(run_dir: Path, attempt: int, problems: list[str]) -> dict[str, Any]:
    noted = len(problems)
    status = _read_or_note(attempt_path(run_dir, attempt) / STATUS, problems)
    return {"state": "unreadable"} if len(problems) > noted else status


def _read_or_note(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        problems.append(f"{path}: unreadable ({str(err)[:120]})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: not a JSON object")
        return {}
    return data


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Every run folder under ``runs_dir``, oldest first (names start with the creation time)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = [read_run(p) for p in root.iterdir() if (p / SPEC).exists()]
    return sorted(found, key=lambda r: (r.created, r.path.name))
