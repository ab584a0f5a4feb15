"""``ftlaunch compare``: do these runs train the same way? Per-step losses against the first run.

The promise behind one spec is mathematical: the same recipe and global batch must give the same
per-step losses on any number of processes, accumulation and ZeRO stage (within summation-order
rounding; tests/e2e/test_equivalence.py holds ftlaunch to it). This lets users check their own
recipe on a new topology with a few steps before a long run. Reads each run's metrics.jsonl (the
attempts joined as ``plot`` joins them); imports nothing heavy.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.cli import flags
from launcher.errors import Parser, SpecError
from launcher.records import curves, metrics, rundir

DEFAULT_TOLERANCE = 1e-5  # relative; fp32 runs of different topologies differ by ~1e-7 (summation order)


@dataclass(frozen=True)
class Topology:
    """What a run trained on, from its newest attempt's effective.json (None: not recorded)."""

    world_size: int | None
    zero_stage: int | None
    global_batch: int | None
    grad_accum: int | None

    @classmethod
    def of(cls, run_dir: Path) -> Topology:
        latest = rundir.latest_attempt(run_dir)
        found = rundir.read_json_quiet(latest / rundir.EFFECTIVE) if latest else {}

        def number(key: str) -> int | None:
            value = found.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(
            number("world_size"), number("zero_stage"), number("global_batch_size"), number("grad_accum")
        )


@dataclass(frozen=True)
class Row:
    run: str
    topology: Topology
    steps: int  # steps compared with the first run (all logged steps for the first run)
    difference: float | None  # max relative loss difference from the first run; None for the first
    at_step: int | None
    verdict: str  # reference | same | DIFFERENT | no common steps


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def compare(
    run_dirs: Sequence[Path], tolerance: float = DEFAULT_TOLERANCE, metric: str | None = None
) -> list[Row]:
    """One row per run: the largest relative difference of ``metric`` (default: the loss, else the
    reference's key metric) from the first run, and where."""
    found = curves.curves(run_dirs)
    key = metric or compared_metric(found[0])
    if key not in found[0].logged():
        raise SpecError([metrics.unknown_metric(key, found[0].logged(), f"the reference {found[0].run}")])
    losses = [dict(zip(*c.series(key), strict=True)) for c in found]
    reference = losses[0]
    rows = [Row(found[0].run, Topology.of(run_dirs[0]), len(reference), None, None, "reference")]
    for run_dir, curve, mine in zip(run_dirs[1:], found[1:], losses[1:], strict=True):
        common = sorted(reference.keys() & mine.keys())
        if not common:
            rows.append(Row(curve.run, Topology.of(run_dir), 0, None, None, "no common steps"))
            continue
        worst = max(common, key=lambda s: relative(reference[s], mine[s]))
        difference = relative(reference[worst], mine[worst])
        same = difference <= tolerance and math.isfinite(difference)
        rows.append(
            Row(
                curve.run,
                Topology.of(run_dir),
                len(common),
                difference,
                worst,
                "same" if same else "DIFFERENT",
            )
        )
    return rows


def compared_metric(reference: curves.Curve) -> str:
    """The loss where the reference logged one (the equivalence promise is about the loss), else
    its key metric (a GRPO run that logs only rewards)."""
    logged = reference.logged()
    return "loss" if "loss" in logged else (metrics.key_metric(logged) or "loss")


def render(rows: Sequence[Row], tolerance: float) -> list[str]:
    def show(value: int | None) -> str:
        return "-" if value is None else str(value)

    header = ("run", "world", "zero", "global", "steps", "max rel diff", "at step", "")
    table = [header] + [
        (
            r.run,
            show(r.topology.world_size),
            show(r.topology.zero_stage),
            show(r.topology.global_batch),
            str(r.steps),
            "-" if r.difference is None else f"{r.difference:.2e}",
            show(r.at_step),
            r.verdict if r.verdict != "same" else f"same (<= {tolerance:g})",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    first = rows[0].topology.global_batch
    for r in rows[1:]:
        if (
            r.verdict == "DIFFERENT"
            and None not in (first, r.topology.global_batch)
            and r.topology.global_batch != first
        ):
            lines.append(
                f"note: {r.run} has global batch {r.topology.global_batch}, the reference {first}: "
                "different global batches are not expected to train the same way"
            )
    return lines


def compare_command(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch compare",
        description="Compare the per-step training losses of runs with the first one: the largest relative "
        "difference and the step where it is, flagged when it exceeds the tolerance (exit 1). Runs of one "
        "recipe and global batch on different processes, accumulation or ZeRO stages should agree to about "
        "1e-7 in fp32; check a new topology with a few steps before a long run.",
        epilog="examples:\n  ftlaunch compare sft-1proc sft-8gpu\n"
        "  ftlaunch compare --tolerance 1e-3 runs/a-20261201-* runs/b-20261201-*     # bf16 runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders or names; the first is the reference"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        metavar="REL",
        help=f"largest relative loss difference taken as the same (default {DEFAULT_TOLERANCE:g})",
    )
    flags.metric_flag(parser, "the logged metric to compare (default: loss, else the reference's key metric)")
    flags.runs_dir_flag(parser)
    ns = parser.parse_args(argv)
    if ns.metric and len(ns.metric) > 1:
        raise SpecError([f"--metric given {len(ns.metric)} times: compare one metric at a time"])
    if not (math.isfinite(ns.tolerance) and ns.tolerance >= 0):
        raise SpecError([f"--tolerance {ns.tolerance}: give a relative difference >= 0, e.g. 1e-5"])
    run_dirs = list(dict.fromkeys(flags.locate(ns.runs_dir, name) for name in ns.runs))
    if len(run_dirs) < 2:
        raise SpecError(["compare needs at least two runs: the reference first, then the ones to check"])
    rows = compare(run_dirs, ns.tolerance, ns.metric[0] if ns.metric else None)
    for line in render(rows, ns.tolerance):
        print(line)
    return 1 if any(r.verdict in ("DIFFERENT", "no common steps") for r in rows) else 0
