"""``ftlaunch plot``: what the trainer logged, for one or several runs, against the step.

By default the run's key metric (GRPO's reward, DPO's reward margin, else the loss: see
``records/metrics.py``), the loss when that is not it, and the learning rate below; ``--metric KEY``
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from launcher.cli import flags
from launcher.cli.flags import metric_flag
from launcher.errors import Parser, SpecError
from launcher.records import rundir
from launcher.records.curves import Boundary, Curve, chosen_metrics, curves
from launcher.spec.launchspec import clip

DEFAULT_OUT = "plot.png"


FORMATS = (".png", ".pdf", ".svg")


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
    flags.runs_dir_flag(parser)
    ns = parser.parse_args(argv)
    out = Path(ns.out)
    check_out(out)
    run_dirs = list(dict.fromkeys(flags.locate(ns.runs_dir, name) for name in ns.runs))
    found = curves(run_dirs)
    keys = chosen_metrics(found, ns.metric or [])
    draw(found, keys, out)
    for line in summary(found, keys[0]):
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


def summary(found: Sequence[Curve], key: str) -> Iterator[str]:
    for c in found:
        steps, values = c.series(key)
        joined = f", {len(c.boundaries) + 1} attempts joined" if c.boundaries else ""
        if steps:
            yield f"{c.run}: steps {steps[0]}-{steps[-1]}, last {key} {values[-1]:.4g}{joined}"
        else:
            yield f"{c.run}: no {key} logged{joined}"
