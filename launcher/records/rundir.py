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
a crash; a corrupt file is reported by the reader, never fatal to listing. Records get the mode any
file the user creates gets (0666 less the umask): teammates on a shared cluster can read each
other's run records, which is safe because no secret is ever written into them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.errors import SpecError
from launcher.spec.launchspec import clip

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


ENVIRONMENT = "environment.json"  # library versions, GPUs, DeepSpeed ops, recipe's git commit (envreport)


EFFECTIVE = "effective.json"


METRICS = "metrics.jsonl"  # one JSON line per trainer log (rank 0): step, loss, ...
SAVES = "saves.jsonl"  # one JSON line per checkpoint save (rank 0): its cost, the steps between, the interval


PROGRESS = "progress.json"  # rank 0's phase and step, rewritten as it goes (the console's live line)


LOGS = "logs"


NODES = "nodes"  # one verdict per node: node{K}.json


DONE = "done"  # one completion marker per rank: rank{R}.json, written after the recipe returned


PREEMPTED = "preempted.json"  # the step at which the ranks agreed to save and stop


ENTRY_ERROR = "entry_error.txt"  # why the entry refused to start the recipe (rank 0 writes it)
HEARTBEATS = "heartbeats"  # rank{R}.json: each rank's phase, step and time, rewritten as it trains
STACKS = "stacks"  # under logs/: rank{R}.txt, every thread's stack when the supervisor asked for it
FAILURES = "failures"  # rank{R}.json: the recipe's exception and the step it was raised at
HANGS = "hangs"  # node{K}.json: which rank made no progress, for how long, where (K's supervisor)


MAX_NAME = 100  # with the date and suffix a folder name stays far below the 255-byte limit


def name_problems(name: str, where: str = "--name") -> list[str]:
    """A run name that can become a folder name as given (up to the slug's character mapping)."""
    shown = repr(clip(name))
    if "/" in name or "\0" in name or any(ord(c) < 32 for c in name):
        return [f"{where} {shown}: a run name cannot contain '/', NUL or control characters"]
    if len(slug(name).encode()) > MAX_NAME:
        return [f"{where} {shown}: {len(name)} characters; a run name is at most {MAX_NAME}"]
    return []


def blocked_folder(path: Path) -> str | None:
    """Why ``path`` cannot be, or become, a folder we write in; None if it can. What decides is the
    first part of the path that exists: it must be a writable folder."""
    for folder in (path, *path.absolute().parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, not a folder"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable"
            return None
    return None


def runs_dir_problems(runs_dir: str | Path) -> list[str]:
    """The runs folder must be (or become) a folder we can write in."""
    why = blocked_folder(Path(runs_dir))
    return [f"--runs-dir {clip(str(runs_dir))}: {why}; pick another --runs-dir"] if why else []


def create(runs_dir: str | Path, name: str) -> Path:
    """A fresh folder ``runs_dir/NAME-YYYYmmdd-HHMMSS-XXXX``; fails rather than reuse one."""
    root = Path(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SpecError([f"--runs-dir {str(root)[:80]}: cannot be created ({err.strerror})"]) from None
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
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name) for p in folder.iterdir() if p.name.isascii() and p.name.isdigit() and p.is_dir()
    )


def latest_attempt(run_dir: Path) -> Path | None:
    numbers = attempt_numbers(run_dir)
    return attempt_path(run_dir, numbers[-1]) if numbers else None


def planned_path(runs_dir: str | Path, name: str) -> Path:
    """What ``create`` would make, for ``--dry-run`` (the random suffix shown as XXXX)."""
    return Path(runs_dir) / f"{slug(name)}-{time.strftime('%Y%m%d-%H%M%S')}-XXXX"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Readers see the old file or the new one, never a part. ``durable``: on disk before it
    replaces the old one (a heartbeat, rewritten every second, need not be)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp's 0600 would hide run records from teammates
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_json(path: Path, data: Any, durable: bool = True) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n", durable)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_json_quiet(path: Path) -> dict[str, Any]:
    """A JSON object being rewritten by another process: {} when absent or unreadable right now."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def json_line(text: str) -> Any:
    return json.loads(text)


def append_json_line(path: Path, data: Any) -> None:
    """One whole line per write (``O_APPEND``), so a reader sees complete lines only."""
    with open(path, "a") as f:
        f.write(json.dumps(data) + "\n")


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


ENDED = {"finished", "failed", "hung", "interrupted", "refused", "cancelled", "requeued", "preempted"}


"""States an attempt is never in again: the verdict is recorded."""
