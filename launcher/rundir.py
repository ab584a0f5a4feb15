"""The run folder: the single record of a launch, read later by ``runs``, ``resume`` and ``status``.

Every launch gets a new folder (created exclusively: never reused, never overwritten). Files are
written atomically (temp file + rename) so a reader never sees half a file, even after a crash.
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
STATUS = "status.json"
COMMAND = "command.sh"
ENV = "env.json"
EFFECTIVE = "effective.json"
LOGS = "logs"
DONE = "done"  # one completion marker per rank: rank{R}.json, written after the recipe returned
CHECKPOINTS = "checkpoints"
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
        (path / LOGS).mkdir()
        (path / DONE).mkdir()
        return path
    raise FileExistsError(f"could not create a new run folder under {root}")


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


def recorded_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(env.items()) if k.startswith(_KEEP_PREFIXES) and not _SECRET.search(k)}


def update_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``status.json``; only the launching process writes it."""
    path = run_dir / STATUS
    status: dict[str, Any] = read_json(path) if path.exists() else {}
    status.update(fields)
    write_json(path, status)
    return status


def completed_ranks(run_dir: Path) -> list[dict[str, Any]]:
    return [read_json(p) for p in sorted((run_dir / DONE).glob("rank*.json"))]


@dataclass(frozen=True)
class RunInfo:
    path: Path
    status: dict[str, Any]

    @property
    def state(self) -> str:
        """The recorded state, except that a "running" run whose launcher is gone is "lost"."""
        state = str(self.status.get("state", "unknown"))
        pid = self.status.get("launcher_pid")
        if state == "running" and isinstance(pid, int) and not _alive(pid):
            return "lost"
        return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = []
    for path in sorted(p for p in root.iterdir() if (p / SPEC).exists()):
        status = read_json(path / STATUS) if (path / STATUS).exists() else {}
        runs.append(RunInfo(path, status))
    return runs
