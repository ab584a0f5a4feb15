"""What the trainer logged, read the same way by the progress line, ``status``, ``plot`` and ``compare``.

Each attempt's ``metrics.jsonl`` holds rank 0's trainer logs as written: SFT logs ``loss``, DPO adds
``rewards/chosen``, ``rewards/margins``, ``rewards/accuracies``, GRPO logs ``reward``, ``kl``,
``completions/mean_length`` and often no ``loss`` at all, and every trainer ends with a summary
(``train_loss``, ``train_runtime``). Nothing here knows a trainer by name: the key metric is the
first of ``KEY_METRICS`` that the run logged, so a recipe of any trainer gets a sensible default.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from launcher.records import rundir, runs

METRICS_TAIL = 64 * 1024  # bytes of metrics.jsonl read for the newest loss before reading it all


def metric_record(line: str) -> dict[str, Any] | None:
    """One trainer log of ``metrics.jsonl``; None for a line cut by a crash or otherwise not a record."""
    try:
        record = rundir.json_line(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def last_metrics(attempt_dir: Path) -> dict[str, Any]:
    """The newest log of training steps with the trainer's key metric (loss, reward, ...; not the
    end-of-training summary). The tail is read first: a long run's log grows to megabytes, and
    ``status`` reads every run's."""
    path = attempt_dir / rundir.METRICS
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {}
    for start in dict.fromkeys((max(0, size - METRICS_TAIL), 0)):
        for line in reversed(lines_from(path, start)):
            record = metric_record(line)
            if record is not None and is_step_log(record) and key_metric(record):
                return record
    return {}


def saves_of(attempt_dir: Path) -> list[dict[str, Any]]:
    """Rank 0's record of each checkpoint save (``rank/saves.py``): cost, steps between, interval."""
    try:
        text = (attempt_dir / rundir.SAVES).read_text()
    except OSError:
        return []
    return [r for r in map(metric_record, text.splitlines()) if r is not None]


def describe_saves(saves: list[dict[str, Any]]) -> str | None:
    """``3 saves, the last 2.1 s at step 40; every 25 steps (auto)`` for ``status``."""
    if not saves:
        return None
    last = saves[-1]
    count = f"{len(saves)} save{'s' * (len(saves) > 1)}"
    said = f"{count}, the last {last.get('seconds')} s at step {last.get('step')}"
    mode = last.get("mode")
    if mode == "auto" and last.get("interval"):
        return f"{said}; every {last['interval']} steps (--save-every auto)"
    return f"{said}; {mode}" if mode and mode != "save_steps" else said


def lines_from(path: Path, start: int) -> list[str]:
    """The whole lines of ``path`` from byte ``start`` on (the first one, cut, is dropped)."""
    with open(path, "rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()
    return lines[1:] if start else lines


def run_metrics(run: runs.RunInfo) -> dict[str, Any]:
    """The newest loss of the run: a new attempt that has not logged yet shows its predecessor's."""
    for attempt in reversed(run.attempts):
        found = last_metrics(attempt.path)
        if found:
            return found
    return {}


# The metric a person watches, best first: GRPO's reward, DPO's reward margin, the loss; a run that
# logged only the end-of-training summary still has its ``train_loss``.
KEY_METRICS = ("reward", "rewards/margins", "loss", "train_loss")


# Keys that are bookkeeping, not something to plot against the step.
NOT_METRICS = frozenset({"step", "time"})


# The end-of-training summary's keys (one line, no per-step meaning).
SUMMARY_KEYS = frozenset({"train_loss", "train_runtime", "train_samples_per_second", "total_flos"})


def number(value: Any) -> float | None:
    """A finite number from a log record (a bool, a string or NaN is not one)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def values_of(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of one trainer log."""
    found = {}
    for key, value in record.items():
        n = number(value)
        if n is not None and key not in NOT_METRICS:
            found[key] = n
    return found


def is_step_log(record: Mapping[str, Any]) -> bool:
    """A log of training steps: not the end-of-training summary, not an evaluation."""
    return SUMMARY_KEYS.isdisjoint(record) and not any(str(k).startswith("eval_") for k in record)


def key_metric(logged: Iterable[str]) -> str | None:
    """The metric to show first for a run that logged these keys (``KEY_METRICS`` order)."""
    keys = set(logged)
    return next((k for k in KEY_METRICS if k in keys), None)


def default_metrics(logged: Iterable[str]) -> list[str]:
    """What ``plot`` draws when not told: the key metric, the loss when that is not it, the learning
    rate below."""
    keys = set(logged)
    first = key_metric(keys)
    chosen = [first] if first else []
    if "loss" in keys and "loss" not in chosen:
        chosen.append("loss")
    if "learning_rate" in keys:
        chosen.append("learning_rate")
    return chosen


def unknown_metric(key: str, logged: Iterable[str], where: str) -> str:
    """The error for a metric nobody logged: the closest keys and every key that was logged."""
    keys = sorted(set(logged))
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    listed = ", ".join(keys) if keys else "none yet"
    return f"--metric {key}: not logged by {where}; {hint}logged: {listed}"
