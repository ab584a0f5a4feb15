"""A run's training curves across its attempts: every logged metric per step, where each resumed
attempt took over (later attempts replace the steps they repeated). Shared by ``plot``, ``compare``
and ``status``; reads files only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import SpecError
from launcher.records import metrics, rundir
from launcher.render import DECIDED_FILE
from launcher.spec.launchspec import clip


@dataclass(frozen=True)
class Point:
    step: int
    values: Mapping[str, float]  # every numeric metric of one trainer log
    attempt: int


@dataclass(frozen=True)
class Boundary:
    """Where attempt ``attempt`` took over: the step it resumed from, else its first logged step."""

    attempt: int
    step: int
    resumed: bool


@dataclass(frozen=True)
class Curve:
    run: str
    points: tuple[Point, ...]
    boundaries: tuple[Boundary, ...]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """The steps and values of metric ``key`` where the trainer logged one."""
        pairs = [(p.step, p.values[key]) for p in self.points if key in p.values]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def logged(self) -> set[str]:
        return {key for p in self.points for key in p.values}


# ---------------------------------------------------------------- reading (no matplotlib)


def points_of(attempt_dir: Path, attempt: int) -> list[Point]:
    """The trainer logs of one attempt that have a step and a number (evaluations too, as their
    ``eval_*`` keys; of the end-of-training summary only ``train_loss``); lines cut by a crash are
    left out."""
    path = attempt_dir / rundir.METRICS
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        record = metrics.metric_record(line)
        step = metrics.number(record.get("step")) if record else None
        values = metrics.values_of(record) if record else {}
        if record and not metrics.is_step_log(record) and "train_loss" in values:
            values = {"train_loss": values["train_loss"]}  # the summary: its runtime is no curve
        if step is not None and values:
            found.append(Point(int(step), values, attempt))
    return found


def resumed_step(attempt_dir: Path) -> int | None:
    """The checkpoint step this attempt resumed from, as ``decided.json`` recorded it."""
    try:
        resume = rundir.read_json(attempt_dir / DECIDED_FILE).get("resume") or {}
        step = resume.get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def curve(run_dir: Path) -> Curve:
    """One run's attempts joined: each attempt's points replace the earlier ones from where it took
    over, and every attempt after the first that logged anything is a boundary."""
    points: list[Point] = []
    boundaries: list[Boundary] = []
    for number_ in rundir.attempt_numbers(run_dir):
        attempt_dir = rundir.attempt_path(run_dir, number_)
        new = points_of(attempt_dir, number_)
        if not new:
            continue
        resumed = resumed_step(attempt_dir)
        first = min(p.step for p in new)
        kept_to = resumed if resumed is not None else first - 1  # the last step of the history kept
        if points:
            boundaries.append(Boundary(number_, first if resumed is None else resumed, resumed is not None))
            points = [p for p in points if p.step <= kept_to]
        points += sorted(new, key=lambda p: p.step)
    return Curve(run_dir.name, tuple(points), tuple(boundaries))


def curves(run_dirs: Sequence[Path]) -> list[Curve]:
    """One curve per run; a run that logged nothing yet is an error naming it (all of them at once)."""
    found = [curve(run_dir) for run_dir in run_dirs]
    empty = [c.run for c in found if metrics.key_metric(c.logged()) is None]
    if empty:
        raise SpecError(
            [
                f"{clip(name)}: no training metric logged yet (no loss or reward line in any attempts/*/"
                f"{rundir.METRICS}); plot it once the trainer has logged a step"
                for name in empty
            ]
        )
    return found


def chosen_metrics(found: Sequence[Curve], asked: Sequence[str]) -> list[str]:
    """The metrics to draw: those asked for (each logged by at least one of the runs), or the
    defaults of what the runs logged (``metrics.default_metrics``)."""
    logged = set().union(*(c.logged() for c in found))
    where = found[0].run if len(found) == 1 else f"any of the {len(found)} runs"
    unknown = [metrics.unknown_metric(key, logged, clip(where)) for key in asked if key not in logged]
    if unknown:
        raise SpecError(unknown)
    return list(dict.fromkeys(asked)) or metrics.default_metrics(logged)
