"""``ftlaunch plot``: what the trainer logged, for one or several runs, against the step.

By default the run's key metric (GRPO's reward, DPO's reward margin, else the loss: see
``launcher.metrics``), the loss when that is not it, and the learning rate below; ``--metric KEY``
(repeatable) draws any key of ``metrics.jsonl`` instead.

A run is several attempts (a requeue, a resume), each with its own ``metrics.jsonl``; the plot joins
them into one curve per run and marks where each later attempt took over. An attempt that resumed
from checkpoint N re-logs the steps after N that its predecessor had already logged and lost: the
newer values replace them, so the curve shows the training that the final weights went through.

``curves`` reads the run folders into plain points (tested directly); ``draw`` alone imports
matplotlib, and only this subcommand calls it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import control, metrics, rundir
from launcher.errors import Parser, SpecError
from launcher.render import DECIDED_FILE
from launcher.spec import clip

DEFAULT_OUT = "plot.png"
FORMATS = (".png", ".pdf", ".svg")


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
        record = control.metric_record(line)
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


# ---------------------------------------------------------------- drawing


def draw(found: Sequence[Curve], keys: Sequence[str], out: Path) -> None:
    """One panel per metric on one step axis, the first taller; each run one colour, each later
    attempt a dashed line of that colour labelled with its number."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and never a GUI window from a launcher
    import matplotlib.pyplot as plt

    heights = [3.0] + [1.4] * (len(keys) - 1)
    fig, axes = plt.subplots(
        len(keys), 1, sharex=True, figsize=(10, 2.6 + sum(heights)), height_ratios=heights, squeeze=False
    )
    panels = [row[0] for row in axes]
    try:
        for index, c in enumerate(found):
            colour = f"C{index % 10}"
            for ax, key in zip(panels, keys, strict=True):
                draw_series(ax, c, key, colour, label=c.run if ax is panels[0] else None)
            for b in c.boundaries:
                mark_boundary(panels, b, colour)
        label_panels(panels, keys, len(found))
        fig.tight_layout()
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)


def label_panels(panels: Sequence[Any], keys: Sequence[str], runs: int) -> None:
    panels[0].set_title(f"{keys[0]} of {runs} run{'s' * (runs > 1)}")
    panels[0].legend(loc="best", fontsize="small")
    panels[-1].set_xlabel("step")
    for ax, key in zip(panels, keys, strict=True):
        ax.set_ylabel(key.replace("_", " ") if key == "learning_rate" else key)
        ax.grid(alpha=0.3)
        if key == "learning_rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))


def draw_series(ax: Any, c: Curve, key: str, colour: str, label: str | None) -> None:
    steps, values = c.series(key)
    ax.plot(steps, values, color=colour, label=label, marker="." if len(steps) < 50 else None)


def mark_boundary(panels: Sequence[Any], b: Boundary, colour: str) -> None:
    for ax in panels:
        ax.axvline(b.step, color=colour, linestyle="--", linewidth=1, alpha=0.8)
    text = f"attempt {b.attempt}" + (f" (resumed from step {b.step})" if b.resumed else "")
    panels[0].annotate(
        text,
        xy=(b.step, 1),
        xycoords=("data", "axes fraction"),
        xytext=(3, -4),
        textcoords="offset points",
        rotation=90,
        va="top",
        fontsize="small",
        color=colour,
    )


# ---------------------------------------------------------------- the subcommand


def plot_command(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch plot",
        description="Draw what the trainer logged for one or several runs against the step: by default the "
        "key metric (GRPO's reward, DPO's rewards/margins, else the loss), the loss when that is not it, "
        "and the learning rate below. The attempts of a run (requeues, resumes) are joined into one "
        "curve; a dashed line marks where each later attempt took over. Reads each attempt's metrics.jsonl.",
        epilog="examples:\n  ftlaunch plot RUN                      # writes plot.png here\n"
        "  ftlaunch plot RUN_A RUN_B -o compare.png\n"
        "  ftlaunch plot RUN --metric reward --metric kl --metric completions/mean_length\n"
        "  ftlaunch plot --runs-dir /scratch/runs sft -o sft.svg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a run folder, or its name (a unique prefix)")
    parser.add_argument(
        "-o",
        "--out",
        metavar="FILE",
        default=DEFAULT_OUT,
        help=f"the image to write, {'/'.join(FORMATS)} (default: {DEFAULT_OUT} in the current folder)",
    )
    metric_flag(parser, "a key of metrics.jsonl to draw, one panel each (repeatable; default: see above)")
    control.runs_dir_flag(parser)
    ns = parser.parse_args(argv)
    out = Path(ns.out)
    check_out(out)
    run_dirs = list(dict.fromkeys(control.locate(ns.runs_dir, name) for name in ns.runs))
    found = curves(run_dirs)
    keys = chosen_metrics(found, ns.metric or [])
    draw(found, keys, out)
    for line in summary(found, keys[0]):
        print(line, file=sys.stderr)
    print(f"wrote {out}")
    return 0


def metric_flag(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--metric", action="append", metavar="KEY", help=text)


def check_out(out: Path) -> None:
    """Refuse an output we could not write before reading any run (and before matplotlib loads)."""
    problems = []
    if out.suffix.lower() not in FORMATS:
        problems.append(f"-o {clip(str(out))}: the file name must end in {', '.join(FORMATS)}")
    why = rundir.blocked_folder(out.parent)
    if why:
        problems.append(f"-o {clip(str(out))}: {why}; give a folder you can write in")
    if out.is_dir():
        problems.append(f"-o {clip(str(out))}: is a folder; give a file name such as {out / DEFAULT_OUT}")
    if problems:
        raise SpecError(problems)


def summary(found: Sequence[Curve], key: str) -> Iterator[str]:
    for c in found:
        steps, values = c.series(key)
        joined = f", {len(c.boundaries) + 1} attempts joined" if c.boundaries else ""
        if steps:
            yield f"{c.run}: steps {steps[0]}-{steps[-1]}, last {key} {values[-1]:.4g}{joined}"
        else:
            yield f"{c.run}: no {key} logged{joined}"
