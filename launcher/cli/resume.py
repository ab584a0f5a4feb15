"""``ftlaunch resume RUN``: continue a run from its latest complete checkpoint, on the same or
another topology, taking or refusing the batch flags typed for this attempt."""

from __future__ import annotations

import argparse
from typing import Any

from launcher.cli import flags
from launcher.cli.flags import add_spec_flags, spec_from_args
from launcher.errors import Parser
from launcher.launch import continue_run
from launcher.records import rundir
from launcher.spec.launchspec import LaunchSpec, from_mapping, merge, value_at


def resume_command(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch resume",
        description="Continue a run from its latest complete checkpoint as a new attempt in the same "
        "run folder, with the run's recorded spec. Topology flags may change it: the global batch is "
        "kept (micro batch no larger than saved, the rest accumulated; a recipe's hard-coded values are "
        "replaced) and a DeepSpeed checkpoint saved on another world size is converted to a universal "
        "checkpoint. Batch flags given here take effect: another split of the same global batch, or a "
        "deliberate change of it (warned and recorded).",
        epilog="examples:\n  ftlaunch resume RUN\n  ftlaunch resume RUN --procs 1\n"
        "  ftlaunch resume RUN --gpus 8 --micro-batch 2\n"
        "  ftlaunch resume RUN --gpus 4 --slurm\n  ftlaunch resume RUN --local --gpus 8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="a run folder, or its name (a unique prefix will do)")
    add_spec_flags(parser)
    parser.add_argument("--local", action="store_true", help="run here even if the run was on SLURM")
    parser.add_argument("--dry-run", action="store_true", help="print the plan of the new attempt only")
    parser.add_argument("--wait", action="store_true", help="with --slurm: follow the job to its end")
    ns = parser.parse_args(argv)
    runs_dir = getattr(ns, "runs_dir", None) or "runs"
    run_dir = flags.locate(runs_dir, ns.run)
    recorded = from_mapping(rundir.read_json(run_dir / rundir.SPEC), str(run_dir / rundir.SPEC))
    spec = spec_from_args(ns, None, (), base=recorded)
    spec = merge(spec, typed_batch(ns, spec))
    if ns.local:
        spec = merge(spec, {"slurm.enabled": False})
    return continue_run(run_dir, spec, dry_run=ns.dry_run, wait=ns.wait)


def typed_batch(ns: argparse.Namespace, spec: LaunchSpec) -> dict[str, Any]:
    """The batch of this ``resume`` command as typed (flags, or a job YAML given with it), the rest
    unset: the run's own batch comes from its checkpoint (``rules/resume.py``), not from the
    first launch's flags, and a typed value is taken or refused there, never dropped."""
    keys = ("batch.micro", "batch.grad_accum", "batch.global_batch")
    return {key: value_at(spec, key) if ns.job or getattr(ns, key) is not None else None for key in keys}
