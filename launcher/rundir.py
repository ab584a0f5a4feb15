"""The run folder: the single record of a launch, read later by ``status``, ``logs``, ``cancel``
and ``resume``. Only this module knows its layout::

    RUN/spec.json              the spec as requested
    RUN/run.json               name, backend, SLURM job ids
    RUN/attempts/N/            one per launch, requeue or resume: decided.json, the configs, env.json,
                               plan.json, command.sh, status.json, effective.json, logs/, done/, nodes/
    RUN/checkpoints/           the recipe's output when it kept the default output_dir
    RUN/slurm/                 submitit's folder (pickles, sbatch scripts, task logs)

Every launch gets a new folder (created exclusively: never reused, never overwritten); a requeue
or a resume adds an attempt, so nothing of an earlier attempt is counted again or overwritten.
Files are written atomically (temp file + rename) so a reader never sees half a file, even after
a crash; a corrupt file is reported by the reader, never fatal to listing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPEC = "spec.json"
RUN = "run.json"
ATTEMPTS = "attempts"
SLURM = "slurm"
CHECKPOINTS = "checkpoints"
# Inside an attempt:
STATUS = "status.json"
PLAN = "plan.json"
COMMAND = "command.sh"
HOST_ENV = "host_env.json"  # the relevant variables of the launching environment, secrets dropped
EFFECTIVE = "effective.json"
METRICS = "metrics.jsonl"  # one JSON line per trainer log (rank 0): step, loss, ...
LOGS = "logs"
NODES = "nodes"  # one verdict per node: node{K}.json
DONE = "done"  # one completion marker per rank: rank{R}.json, written after the recipe returned
PREEMPTED = "preempted.json"  # the step at which the ranks agreed to save and stop
ENTRY_ERROR = "entry_error.txt"  # why the entry refused to start the recipe (rank 0 writes it)

# Environment worth keeping to reproduce a run; anything that looks like a credential is dropped.
_KEEP_PREFIXES = (
    "CUDA_",
    "NCCL_",
    "TORCH_",
    "DS_",
    "ACCELERATE_",
    "HF_",
    "OMP_",
    "MASTER_",
    "SLURM_",
    "PYTORCH_",
    "TRANSFORMERS_",
    "FTLAUNCH_",
    "WORLD_SIZE",
    "PYTHONPATH",
    "LOCAL_",
    "GLOO_",
)
_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL|AUTH|PRIVATE", re.IGNORECASE)


def create(runs_dir: str | Path, name: str) -> Path:
    """A fresh folder ``runs_dir/NAME-YYYYmmdd-HHMMSS-XXXX``; fails rather than reuse one."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(20):
        path = root / f"{slug(name)}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / ATTEMPTS).mkdir()
        return path
    raise FileExistsError(f"could not create a new run folder under {root}")


def attempt_path(run_dir: Path, attempt: int) -> Path:
    return run_dir / ATTEMPTS / str(attempt)


def checkpoints_of(attempt_dir: Path) -> Path:
    """Where a recipe that kept the default ``output_dir`` saves: shared by all attempts of a run."""
    return attempt_dir.parent.parent / CHECKPOINTS


def write_attempt(run_dir: Path, attempt: int, files: Mapping[str, str]) -> Path:
    """Create attempt ``attempt`` with its rendered ``files``. Every node of a requeued SLURM job
    calls this for the same attempt with the same texts, so existing files are left as they are."""
    path = attempt_path(run_dir, attempt)
    for sub in (LOGS, DONE, NODES):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if not (path / name).exists():
            write_atomic(path / name, text)
    return path


def attempt_numbers(run_dir: Path) -> list[int]:
    folder = run_dir / ATTEMPTS
    found = (int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else iter(())
    return sorted(found)


def latest_attempt(run_dir: Path) -> Path | None:
    numbers = attempt_numbers(run_dir)
    return attempt_path(run_dir, numbers[-1]) if numbers else None


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


def planned_path(runs_dir: str | Path, name: str) -> Path:
    """What ``create`` would make, for ``--dry-run`` (the random suffix shown as XXXX)."""
    return Path(runs_dir) / f"{slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}-XXXX"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def json_line(text: str) -> Any:
    return json.loads(text)


def append_json_line(path: Path, data: Any) -> None:
    """One whole line per write (``O_APPEND``), so a reader sees complete lines only."""
    with open(path, "a") as f:
        f.write(json.dumps(data) + "\n")


def recorded_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(env.items()) if k.startswith(_KEEP_PREFIXES) and not _SECRET.search(k)}


def update_json(path: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the JSON file ``path``; each such file has a single writer."""
    data: dict[str, Any] = read_json(path) if path.exists() else {}
    data.update(fields)
    write_json(path, data)
    return data


def update_status(attempt_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into an attempt's ``status.json``: written by the local launcher, or by the
    submitter and then the first node's task of a SLURM job."""
    return update_json(attempt_dir / STATUS, **fields)


def completed_ranks(attempt_dir: Path) -> list[dict[str, Any]]:
    return [read_json(p) for p in sorted((attempt_dir / DONE).glob("rank*.json"))]


@dataclass(frozen=True)
class Attempt:
    number: int
    path: Path
    status: dict[str, Any]

    @property
    def state(self) -> str:
        """The recorded state, except that a "running" local attempt whose launcher is gone is "lost"."""
        state = str(self.status.get("state", "unknown"))
        pid = self.status.get("launcher_pid")
        if state == "running" and isinstance(pid, int) and not _alive(pid):
            return "lost"
        return state


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
        return self.latest.state if self.latest else "unknown"

    @property
    def job_ids(self) -> list[str]:
        return [str(j) for j in self.run.get("job_ids", [])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run(path: Path) -> RunInfo:
    problems: list[str] = []
    run = _read_or_note(path / RUN, problems)
    attempts = [
        Attempt(n, attempt_path(path, n), _read_or_note(attempt_path(path, n) / STATUS, problems))
        for n in attempt_numbers(path)
    ]
    return RunInfo(path, run, attempts, problems)


def _read_or_note(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        problems.append(f"{path}: unreadable ({err})")
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
    return sorted(found, key=lambda r: (float(r.run.get("created", 0)), r.path.name))
