"""Whether a run that ended badly goes on by itself, read from its attempts.

An attempt that hung, lost a rank or crashed is restarted from the run's latest complete
checkpoint, as a new attempt, at most ``--max-restarts`` times in a row. An error the recipe
raised at the same step in two attempts in a row is the recipe's, not the machine's: it stops
the restarts. So does anything the user or the rules did (refused, interrupted, cancelled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.records import checkpoints, resume, rundir
from launcher.records.faultnode import failures

RESTARTABLE = {"hung", "failed"}


@dataclass(frozen=True)
class Restart:
    number: int  # 1 for the first restart in a row
    cause: str  # what ended the attempt it follows, in a few words


def restart_after(run_dir: Path, attempt: int, max_restarts: int) -> tuple[Restart | None, str]:
    """The restart that follows ``attempt``, or None and why not (empty when nothing went wrong)."""
    status = status_of(run_dir, attempt)
    state = status.get("state")
    if state not in RESTARTABLE:
        return None, ""
    done = int(status.get("restart", 0) or 0)
    if done >= max_restarts:
        return None, f"not restarted: {done} restart(s) in a row already (--max-restarts {max_restarts})"
    repeated = repeated_error(run_dir, attempt) if done else None
    if repeated:
        return None, f"not restarted: {repeated}; fix the recipe, then: ftlaunch resume {run_dir}"
    if checkpoints.latest_complete(resume.output_dir(run_dir))[0] is None:
        return None, "not restarted: no complete checkpoint yet (a restart continues from one: --save_steps)"
    message = str(status.get("message", state))
    return Restart(done + 1, f"attempt {attempt} {message}"[:300]), ""


def status_of(run_dir: Path, attempt: int) -> dict[str, Any]:
    return rundir.read_json_quiet(rundir.attempt_path(run_dir, attempt) / rundir.STATUS)


def repeated_error(run_dir: Path, attempt: int) -> str | None:
    """The recipe's error that ended both this attempt and the one before, at the same step."""
    now = failures(rundir.attempt_path(run_dir, attempt))
    before = failures(rundir.attempt_path(run_dir, attempt - 1)) if attempt > 1 else set()
    same = sorted(now & before, key=str)
    if not same:
        return None
    error, step = same[0]
    return f"the recipe raised {error!r} at step {step} in attempts {attempt - 1} and {attempt}"


def faulty_hosts(run_dir: Path, attempts: int) -> dict[str, int]:
    """How many of the run's attempts (1 to ``attempts``) each host was the fault node of, as each
    attempt recorded it when it ended (``fault_host`` in its status)."""
    counted: dict[str, int] = {}
    for number in range(1, attempts + 1):
        host = status_of(run_dir, number).get("fault_host")
        if host:
            counted[str(host)] = counted.get(str(host), 0) + 1
    return counted
