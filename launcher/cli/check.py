"""``ftlaunch check RECIPE``: the pre-flight alone, without launching."""

from __future__ import annotations

import argparse
import sys

from launcher.cli.flags import Once
from launcher.errors import Parser, SpecError
from launcher.machine import preflight
from launcher.spec.launchspec import LaunchSpec
from launcher.spec.recipe import check_recipe


def check_command(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch check",
        description="Check a recipe without running it, as every launch does first: keywords and imports "
        "that the installed transformers / TRL / peft / datasets renamed or removed (with what to write "
        "instead), recipe arguments its TrlParser / HfArgumentParser would refuse, and values that cannot "
        "work here (a CUDA-only optimizer on CPU processes, bf16 on GPUs without it, report_to "
        "integrations not installed, local model or data paths that do not exist).",
        epilog="examples:\n  ftlaunch check jobs/sft.py --use_peft --max_steps 10\n"
        "  ftlaunch check --procs 2 my_tutorial_script.py     # as it would run on 2 CPU processes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--procs", metavar="N", action=Once, help="the run goes to N CPU processes per node")
    parser.add_argument("--slurm", action="store_true", help="the run goes to SLURM (GPUs not known here)")
    parser.add_argument("recipe", help="the training script")
    parser.add_argument(
        "recipe_args", nargs=argparse.REMAINDER, help="its arguments, as a launch passes them"
    )
    ns = parser.parse_args(argv)
    check_recipe(LaunchSpec(recipe=ns.recipe))
    where = preflight.where_for(on_cpu=ns.procs is not None, slurm=ns.slurm)
    found, notes = preflight.findings(ns.recipe, ns.recipe_args, where)
    for note in notes:
        print(f"ftlaunch: note: {note}", file=sys.stderr)
    if found:
        raise SpecError(found)
    print(f"ftlaunch: {ns.recipe}: no problems found")
    return 0
