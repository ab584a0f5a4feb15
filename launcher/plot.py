"""``ftlaunch plot``: the loss and learning rate of one or several runs against the step.

A run is several attempts (a requeue, a resume), each with its own ``metrics.jsonl``; the plot joins
them into one curve per run and marks where each later attempt took over. An attempt that resumed
from checkpoint N re-logs the steps after N that its predecessor had already logged and lost: the
newer values replace them, so the curve shows the training that the final weights went through.

``curves`` reads the run folders into plain points (tested directly); ``draw`` alone imports
matplotlib, and only this subcommand calls it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import control, rundir
from launcher.errors import Parser, SpecError
from launcher.render import DECIDED_FILE
from launcher.spec import clip

DEFAULT_OUT = "plot.png"
FORMATS = (".png", ".pdf", ".svg")


@dataclass(frozen=True)
class Point:
    step: int
    loss: float | None
    learning_rate: float | None
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
        """The steps and values of ``loss`` or ``learning_rate`` where the trainer logged one."""
        pairs = [(p.step, getattr(p, key)) for p in self.points if getattr(p, key) is not None]
        return [s for s, _ in pairs], [v for _, v in pairs]


# ---------------------------------------------------------------- reading (no matplotlib)


def number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def points_of(attempt_dir: Path, attempt: int) -> list[Point]:
    """The training logs of one attempt: lines with a step and a loss or learning rate. The final
    summary (``train_loss``), evaluation lines and lines cut by a crash are left out."""
    path = attempt_dir / rundir.METRICS
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        record = control.metric_record(line)
        step = number(record.get("step")) if record else None
        if record is None or step is None:
            continue
        loss, lr = number(record.get("loss")), number(record.get("learning_rate"))
        if loss is not None or lr is not None:
            found.append(Point(int(step), loss, lr, attempt))
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
    empty = [c.run for c in found if not any(p.loss is not None for p in c.points)]
    if empty:
        raise SpecError(
            [
                f"{clip(name)}: no training loss logged yet (no loss line in any attempts/*/"
                f"{rundir.METRICS}); plot it once the trainer has logged a step"
                for name in empty
            ]
        )
    return found


# ---------------------------------------------------------------- drawing


def draw(found: Sequence[Curve], out: Path) -> None:
    """Loss above, learning rate below, on one step axis; each run one colour, each later attempt
    a dashed line of that colour labelled with its number."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and never a GUI window from a launcher
    import matplotlib.pyplot as plt

    fig, (loss_ax, lr_ax) = plt.subplots(2, 1, sharex=True, figsize=(10, 7), height_ratios=(3, 1.4))
    try:
        for index, c in enumerate(found):
            colour = f"C{index % 10}"
            draw_series(loss_ax, c, "loss", colour, label=c.run)
            draw_series(lr_ax, c, "learning_rate", colour, label=None)
            for b in c.boundaries:
                mark_boundary(loss_ax, lr_ax, b, colour)
        loss_ax.set_ylabel("loss")
        loss_ax.set_title(f"training loss of {len(found)} run{'s' * (len(found) > 1)}")
        loss_ax.legend(loc="upper right", fontsize="small")
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_xlabel("step")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        for ax in (loss_ax, lr_ax):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)


def draw_series(ax: Any, c: Curve, key: str, colour: str, label: str | None) -> None:
    steps, values = c.series(key)
    ax.plot(steps, values, color=colour, label=label, marker="." if len(steps) < 50 else None)


def mark_boundary(loss_ax: Any, lr_ax: Any, b: Boundary, colour: str) -> None:
    for ax in (loss_ax, lr_ax):
        ax.axvline(b.step, color=colour, linestyle="--", linewidth=1, alpha=0.8)
    text = f"attempt {b.attempt}" + (f" (resumed from step {b.step})" if b.resumed else "")
    loss_ax.annotate(
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
        description="Draw the training loss (and the learning rate below it) of one or several runs "
        "against the step. The attempts of a run (requeues, resumes) are joined into one curve; a "
        "dashed line marks where each later attempt took over. Reads each attempt's metrics.jsonl.",
        epilog="examples:\n  ftlaunch plot RUN                      # writes plot.png here\n"
        "  ftlaunch plot RUN_A RUN_B -o compare.png\n  ftlaunch plot --runs-dir /scratch/runs sft -o sft.svg",
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
    control.runs_dir_flag(parser)
    ns = parser.parse_args(argv)
    out = Path(ns.out)
    check_out(out)
    run_dirs = list(dict.fromkeys(control.locate(ns.runs_dir, name) for name in ns.runs))
    found = curves(run_dirs)
    draw(found, out)
    for line in summary(found):
        print(line, file=sys.stderr)
    print(f"wrote {out}")
    return 0


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


def summary(found: Sequence[Curve]) -> Iterator[str]:
    for c in found:
        steps, losses = c.series("loss")
        joined = f", {len(c.boundaries) + 1} attempts joined" if c.boundaries else ""
        yield f"{c.run}: steps {steps[0]}-{steps[-1]}, last loss {losses[-1]:.4g}{joined}"
