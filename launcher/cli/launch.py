"""The launch form, ``ftlaunch [flags] RECIPE [ARGS]``: parse, gather the machine's facts when
``--zero auto`` needs them, validate, then run the launch flow (``launcher/launch.py``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from launcher import redact
from launcher.errors import Parser, SpecError
from launcher.records import rundir
from launcher.rules.validate import validate
from launcher.spec.launchspec import LaunchSpec, merge
from launcher.spec.recipe import check_recipe, recipe_args_of, split_at_recipe

if TYPE_CHECKING:
    from launcher.sizing.zeroauto import Sizing
from launcher.cli.flags import add_spec_flags, spec_from_args
from launcher.launch import continue_run, execute
from launcher.records.resume import resumable_run

LAUNCH_EXAMPLES = """\
examples:
  ftlaunch --procs 2 --zero 2 jobs/sft.py                 # demo: 2 CPU processes, ZeRO-2, tiny model
  ftlaunch --gpus 8 --zero 1 --global-batch 64 --micro-batch 2 jobs/sft.py --model_name_or_path M
  ftlaunch --gpus 8 --zero 3 --dry-run jobs/sft.py        # print the files and the command only
  ftlaunch --job jobs/sft_demo.yaml --grad-accum 4        # a job spec, flags win
  ftlaunch configs --zero 2 --offload-optimizer cpu       # print the generated configs
  ftlaunch --gpus 8 --zero auto --dry-run jobs/sft.py --model_name_or_path models/M  # stage that fits
  ftlaunch estimate --model models/M --gpus 8             # memory per GPU, every ZeRO stage and offload
  ftlaunch --slurm --nodes 2 --gpus 8 --zero 3 --partition gpu --time 24:00:00 jobs/sft.py
  ftlaunch --slurm --nodes 2 --procs 1 --zero 2 --wait jobs/sft.py --use_peft
  ftlaunch status                                         # runs, their state, step and loss
  ftlaunch logs RUN --follow                              # rank 0 of the newest attempt
  ftlaunch resume RUN [--procs 1]                         # continue from the latest complete checkpoint
  ftlaunch check recipe.py [recipe args]                  # what would crash the ranks, found before launch
  ftlaunch compare RUN_A RUN_B                            # same per-step losses on another topology?
  ftlaunch plot RUN [RUN...] -o loss.png                  # loss and learning rate against step
  ftlaunch env                                            # versions, GPUs, DeepSpeed ops, SLURM, variables

subcommands: configs, estimate, status, logs, cancel, resume, check, plot, compare, env
(ftlaunch SUBCOMMAND --help); ftlaunch --version
"""


def conceal_secrets(spec: LaunchSpec) -> LaunchSpec:
    """Secret recipe arguments leave the spec for this process's environment (see ``redact``)."""
    public, values = redact.conceal(spec.args)
    os.environ.update(values)
    return merge(spec, {"args": public})


# ---------------------------------------------------------------- launch


def launch_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ftlaunch",
        usage="ftlaunch [launch flags] RECIPE.py [recipe args]  |  ftlaunch SUBCOMMAND ...",
        description="Launch a TRL fine-tuning script on GPUs or CPU processes, here or on SLURM, with "
        "DDP or DeepSpeed ZeRO-1/2/3, from one spec: the accelerate config, the DeepSpeed config and "
        "the trainer's arguments are generated to agree.",
        epilog=LAUNCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_flags(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the spec, every file and the plan")
    parser.add_argument("--wait", action="store_true", help="with --slurm: follow the job to its end")
    parser.add_argument(
        "--all-ranks",
        action="store_true",
        help="console: every rank's output as it comes (default: rank 0, each warning once, a progress line; "
        "logs/ always has everything)",
    )
    parser.add_argument(
        "--resume",
        choices=["auto"],
        help="auto: continue the newest run of this --name from its latest complete checkpoint, if any",
    )
    parser.add_argument("recipe", nargs="?", help="the training script")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help="passed to the recipe unchanged")
    return parser


def launch(argv: list[str]) -> int:
    """parse -> spec -> rules -> render -> the backend's plan -> print it, or write it and run it."""
    parser = launch_parser()
    ours, rest = split_at_recipe(parser, argv)
    ns = parser.parse_args(ours)
    recipe_args = recipe_args_of(parser, ns.recipe, rest) if ns.recipe is not None else []
    spec = conceal_secrets(spec_from_args(ns, ns.recipe, recipe_args))
    check_recipe(spec)
    resolved = validate(spec, gather_sizing(spec) if spec.zero.stage == "auto" else None)
    if ns.all_ranks:  # read by each node's supervisor (the environment reaches SLURM's nodes too)
        from launcher.protocol import MODE_ENV

        os.environ[MODE_ENV] = "all"
    if ns.wait and not spec.slurm.enabled:
        raise SpecError(["--wait only applies to --slurm jobs (a local launch always runs to its end)"])
    name = spec.name or Path(spec.recipe or "run").stem
    where = "--name" if spec.name else "the run name (the recipe's file name; give --name)"
    problems = rundir.name_problems(name, where) + rundir.runs_dir_problems(spec.runs_dir)
    if problems:
        raise SpecError(problems)
    if ns.resume == "auto":
        previous = resumable_run(spec, name)
        if previous is not None:
            return continue_run(previous, spec, dry_run=ns.dry_run, wait=ns.wait)
    if ns.dry_run:
        return execute(resolved, lambda: rundir.planned_path(spec.runs_dir, name), 1, True, ns.wait)
    return execute(resolved, lambda: rundir.create(spec.runs_dir, name), 1, False, ns.wait)


def gather_sizing(spec: LaunchSpec) -> Sizing:
    """The facts ``--zero auto`` decides from (model size, GPU memory), gathered at the edge."""
    from launcher.machine import memory

    return memory.gather(spec)
