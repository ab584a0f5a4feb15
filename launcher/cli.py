"""``ftlaunch``: parse, validate, render, then hand over to a backend.

Imports nothing heavy: ``--help`` and ``--dry-run`` never load torch, transformers, trl, deepspeed
or submitit. Subcommands are recognised as the first word; anything else is the launch form.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher import control, jobfile, node, preflight, redact, resume, rundir
from launcher.backends.base import backend_for, make_plan
from launcher.errors import Parser, SpecError
from launcher.recipe import check_recipe, recipe_args_of, split_at_recipe
from launcher.render import DEEPSPEED_FILE, json_text, render_all, texts, yaml_text
from launcher.rules import Resolved, batch_change, validate
from launcher.spec import LaunchSpec, clip, coerce, from_mapping, leaves, merge, to_dict, value_at

if TYPE_CHECKING:
    from launcher.backends.base import Job, Plan
    from launcher.zeroauto import Sizing

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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        from launcher import envreport

        print(f"ftlaunch {envreport.version()}")
        return 0
    command = COMMANDS.get(args[0]) if args else None
    try:
        return command(args[1:]) if command else launch(args)
    except SpecError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ftlaunch --dry-run ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C before anything was started (a run in progress records it)
        print("\nftlaunch: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- parsing


class Once(argparse.Action):
    """A flag that takes one value and may be given once: a repeated ``--job`` or ``--zero`` would
    otherwise silently drop the first value."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, option: str | None = None
    ) -> None:
        previous = getattr(ns, self.dest, None)
        if previous is not None:
            raise SpecError(
                [f"{option} given twice ({clip(str(previous))} and {clip(str(value))}); give it once"]
            )
        setattr(ns, self.dest, value)


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per spec value, with the help text declared on the spec field."""
    parser.add_argument(
        "--job", metavar="FILE", action=Once, help="a job YAML; command-line flags override it"
    )
    group = parser.add_argument_group("launch spec")
    for leaf in leaves():
        if not leaf.flag.startswith("--"):
            continue
        if leaf.hint is bool:  # a switch; "true" is coerced like a YAML value
            group.add_argument(leaf.flag, dest=leaf.key, action="store_const", const="true", help=leaf.help)
            continue
        metavar = leaf.field.metadata.get("metavar") or leaf.key.split(".")[-1].upper()
        action = "append" if typing.get_origin(leaf.hint) is tuple else Once
        group.add_argument(leaf.flag, dest=leaf.key, metavar=metavar, help=leaf.help, action=action)


def spec_from_args(
    ns: argparse.Namespace, recipe: str | None, recipe_args: Sequence[str], base: LaunchSpec | None = None
) -> LaunchSpec:
    """YAML first (if any), then every flag the user typed on top; all problems reported together.
    Settings flags (``--ds``, ``--accelerate``) add to the YAML's, the later winning per key. A
    ``--ds-config`` named by this command is read here, so the spec records what it held."""
    base = jobfile.load(ns.job) if ns.job else (base or LaunchSpec())
    problems: list[str] = []
    overrides: dict[str, Any] = {}
    for leaf in leaves():
        raw = getattr(ns, leaf.key, None)
        if raw is not None:
            overrides[leaf.key] = coerce(leaf.hint, raw, leaf.flag, problems)
            if leaf.field.metadata.get("settings") and overrides[leaf.key] is not None:
                overrides[leaf.key] = value_at(base, leaf.key) + overrides[leaf.key]  # flags win per key
    if recipe is not None:
        overrides["recipe"] = recipe
        overrides["args"] = tuple(recipe_args)
    if problems:
        raise SpecError(problems)
    spec = merge(base, overrides)
    if spec.ds_config is not None and (ns.job or "ds_config" in overrides):  # named now: read it now
        spec = merge(spec, {"ds_config_settings": jobfile.read_ds_config(spec.ds_config)})
    return spec


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
        from launcher.console import MODE_ENV

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


def execute(resolved: Resolved, run_dir: Callable[[], Path], attempt: int, dry_run: bool, wait: bool) -> int:
    """The one flow after deciding: plan, then print it, or write it and hand it to the backend.
    ``run_dir`` is called only once nothing can refuse any more, so a refusal leaves no folder."""
    backend = backend_for(resolved)
    refusals, notes = recipe_findings(resolved)
    problems = backend.problems(resolved) + refusals
    if dry_run:
        the_plan = make_plan(resolved, run_dir(), attempt, os.getcwd())
        print_dry_run(resolved, the_plan, [f"a real launch here would refuse: {p}" for p in problems] + notes)
        return 0
    for note in notes:
        print(f"ftlaunch: note: {note}", file=sys.stderr)
    from launcher import libcheck  # DeepSpeed's and accelerate's own checks import torch: never on a dry run

    problems = problems or libcheck.problems(resolved)
    if problems:
        raise SpecError(problems)
    resume.prepare(resolved)
    node.defer_stop_signals()  # from here an interruption is recorded in the run folder, not half-done
    try:
        the_plan = make_plan(resolved, run_dir(), attempt, os.getcwd())
        write_plan(the_plan, resolved)
        print(f"ftlaunch: run folder {the_plan.run_dir} (attempt {attempt})", file=sys.stderr)
        job = backend.submit(the_plan)  # the local supervisor takes the signals over once it owns the tree
    finally:
        node.release_stop_signals()
    return follow(job, the_plan, wait=wait)


def recipe_findings(resolved: Resolved) -> tuple[list[str], list[str]]:
    """The pre-flight of the recipe (``launcher.preflight``): what would crash every rank, and notes."""
    spec = resolved.spec
    assert spec.recipe is not None
    offload = spec.zero.offload_optimizer != "none"
    where = preflight.where_for(spec.topology.on_cpu, spec.slurm.enabled, offload)
    return preflight.findings(spec.recipe, spec.args, where)


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


def resumable_run(spec: LaunchSpec, name: str) -> Path | None:
    """For ``--resume auto``: the newest run of this name that has a complete checkpoint."""
    if spec.name is None:
        raise SpecError(["--resume auto needs --name NAME (the run to continue when it exists)"])
    from launcher import checkpoints

    for run in reversed(rundir.list_runs(spec.runs_dir)):
        if rundir.read_json(run.path / rundir.SPEC).get("name") == spec.name:
            found, _ = checkpoints.latest_complete(resume.output_dir(run.path))
            if found is not None:
                return run.path
    return None


def continue_run(run_dir: Path, spec: LaunchSpec, dry_run: bool, wait: bool) -> int:
    """A new attempt of ``run_dir`` from its latest complete checkpoint, on ``spec``'s topology."""
    missing = redact.missing(spec.args, os.environ)
    if missing:
        raise SpecError(missing)
    resolved, warnings = resume.decide(run_dir, spec)
    for warning in warnings:
        print(f"ftlaunch: {warning}", file=sys.stderr)
    assert resolved.resume is not None
    change = batch_change(resolved.batch, resolved.resume.saved_global_batch, resolved.resume.step)
    if change:
        print(f"ftlaunch: warning: {change}", file=sys.stderr)
    moved = resolved.resume.universal
    print(
        f"ftlaunch: resuming {run_dir.name} from {Path(resolved.resume.checkpoint).name}"
        f" ({resolved.batch.describe()}{'; universal checkpoint, world size changed' if moved else ''})",
        file=sys.stderr,
    )
    attempt = max(rundir.attempt_numbers(run_dir), default=0) + 1
    return execute(resolved, lambda: run_dir, attempt, dry_run, wait)


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
    run_dir = control.locate(runs_dir, ns.run)
    recorded = from_mapping(rundir.read_json(run_dir / rundir.SPEC), str(run_dir / rundir.SPEC))
    spec = spec_from_args(ns, None, (), base=recorded)
    spec = merge(spec, typed_batch(ns, spec))
    if ns.local:
        spec = merge(spec, {"slurm.enabled": False})
    return continue_run(run_dir, spec, dry_run=ns.dry_run, wait=ns.wait)


def typed_batch(ns: argparse.Namespace, spec: LaunchSpec) -> dict[str, Any]:
    """The batch of this ``resume`` command as typed (flags, or a job YAML given with it), the rest
    unset: the run's own batch comes from its checkpoint (``rules.resume_batch``), not from the
    first launch's flags, and a typed value is taken or refused there, never dropped."""
    keys = ("batch.micro", "batch.grad_accum", "batch.global_batch")
    return {key: value_at(spec, key) if ns.job or getattr(ns, key) is not None else None for key in keys}


def write_plan(the_plan: Plan, resolved: Resolved) -> None:
    """The edge where a plan becomes files: the run's spec and record, then the attempt."""
    run_dir = the_plan.run_dir
    if not (run_dir / rundir.SPEC).exists():
        rundir.write_json(run_dir / rundir.SPEC, to_dict(resolved.spec))
        rundir.write_json(
            run_dir / rundir.RUN,
            {"name": run_dir.name, "backend": the_plan.backend, "created": time.time(), "job_ids": []},
        )
    attempt_dir = rundir.write_attempt(run_dir, the_plan.attempt, the_plan.files())
    rundir.write_json(attempt_dir / rundir.HOST_ENV, rundir.recorded_env(os.environ))
    from launcher import envreport

    facts = envreport.at_launch(the_plan.cwd, the_plan.resolved.spec.recipe, the_plan.backend)
    rundir.write_json(attempt_dir / rundir.ENVIRONMENT, facts)


def follow(job: Job, the_plan: Plan, wait: bool) -> int:
    """Report the outcome (local), or the job id (SLURM), following the job with ``--wait``."""
    if the_plan.backend == "slurm" and not wait:
        print(
            f"ftlaunch: submitted SLURM job {job.job_id}; follow it with: ftlaunch status "
            f"{the_plan.run_dir}  |  ftlaunch logs {the_plan.run_dir} --follow",
            file=sys.stderr,
        )
        return 0
    code = job.wait()
    latest = rundir.read_run(the_plan.run_dir).latest
    status = latest.status if latest else {}
    print(
        f"ftlaunch: {status.get('message', status.get('state'))}. Run folder: {the_plan.run_dir}",
        file=sys.stderr,
    )
    for line in job.report():
        print(line, file=sys.stderr)
    return code


def print_dry_run(resolved: Resolved, the_plan: Plan, notes: list[str]) -> None:
    spec = resolved.spec
    print(f"# effective: {resolved.batch.describe()}")
    how = ["plain DDP"] if spec.zero.stage == 0 else []
    how += ["chosen by --zero auto"] if resolved.zero_auto else []
    described = f" ({', '.join(how)})" if how else ""
    print(
        f"# precision: {spec.precision or 'from the recipe'}, zero stage: {spec.zero.stage}{described}, "
        f"world size: {resolved.world_size}"
    )
    for line in resolved.zero_auto.reason if resolved.zero_auto else ():
        print(f"# zero auto: {line}")
    print(f"# backend: {the_plan.backend}, nodes: {spec.topology.nodes} x {the_plan.per_node} processes")
    for note in notes:
        print(f"# note: {note}")
    print(f"# run folder: {the_plan.run_dir}")
    prefix = f"{the_plan.attempt_dir}/"
    files = the_plan.files()
    files.pop(rundir.PLAN)
    command = files.pop(rundir.COMMAND)
    print_texts(files, prefix)
    print(
        f"# also written at launch: {rundir.PLAN} (this plan as JSON), {rundir.HOST_ENV} (this "
        "shell's relevant variables, secrets dropped)"
    )
    if the_plan.slurm is not None:
        print("# --- submitit parameters (SlurmExecutor)")
        print(json_text(dict(the_plan.slurm)), end="")
        print("# --- sbatch script (submitit writes and submits it)")
        print(the_plan.sbatch or "", end="" if (the_plan.sbatch or "").endswith("\n") else "\n")
    print(f"# command: {prefix}{rundir.COMMAND} (one node's)")
    print(command, end="")


def print_texts(files: dict[str, str], prefix: str = "") -> None:
    for name, text in files.items():
        print(f"# --- {prefix}{name}")
        print(text, end="")


# ---------------------------------------------------------------- configs


def configs(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch configs",
        description="Print (or write) the accelerate YAML, the DeepSpeed JSON and the trainer overrides "
        "for the given launch flags, or the presets kept in accelerate_configs/ and ds_configs/.",
        epilog="examples:\n  ftlaunch configs --gpus 8 --zero 3 --micro-batch 1 --grad-accum 8\n"
        "  ftlaunch configs --zero 2 --write --out my_configs/\n"
        "  ftlaunch configs --presets --write        # refresh accelerate_configs/ and ds_configs/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_flags(parser)
    parser.add_argument("--presets", action="store_true", help="the committed presets instead of one spec")
    parser.add_argument("--write", action="store_true", help="write the files instead of printing them")
    parser.add_argument(
        "--out", metavar="DIR", action=Once, help="where --write puts them (default: . for presets)"
    )
    parser.add_argument("--force", action="store_true", help="with --write: replace files that differ")
    ns = parser.parse_args(argv)
    if ns.out and not ns.write:
        raise SpecError(
            [
                f"configs --out {clip(ns.out)}: nothing is written without --write (the files are only "
                "printed); add --write"
            ]
        )
    if ns.presets:
        return write_presets(Path(ns.out or ".")) if ns.write else print_presets()
    resolved = validate(spec_from_args(ns, None, ()))
    if ns.write and not ns.out:
        raise SpecError(["configs --write needs --out DIR (where to write the three files)"])
    out = Path(ns.out or ".")
    rendered = render_all(resolved, deepspeed_path=str(out / DEEPSPEED_FILE))
    if not ns.write:
        print_texts(texts(rendered))
        return 0
    return write_files({out / name: text for name, text in texts(rendered).items()}, ns.force)


def write_files(files: dict[Path, str], force: bool) -> int:
    """Write generated files, refusing to replace a different file (perhaps edited by hand)
    unless ``--force``; everything is checked before anything is written."""
    blocked = (rundir.blocked_folder(path.parent) for path in files)
    problems = [f"--out: {why}; give a folder you can write in" for why in blocked if why]
    changed = [p for p, text in files.items() if p.is_file() and p.read_bytes() != text.encode()]
    if changed and not force:
        names = ", ".join(clip(str(p)) for p in changed)
        problems.append(f"{names}: exists and differs from what would be written; add --force to replace")
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_atomic(path, text)
        print(f"wrote {path}")
    return 0


def preset_texts() -> dict[str, str]:
    """Relative path -> text of every committed preset file."""
    from launcher.presets import ACCELERATE_DIR, DEEPSPEED_DIR, PRESETS

    texts = {}
    for name, spec in PRESETS.items():
        ds_path = f"{DEEPSPEED_DIR}/{name}.json"
        rendered = render_all(validate(spec), deepspeed_path=ds_path)
        texts[f"{ACCELERATE_DIR}/{name}.yaml"] = yaml_text(rendered.accelerate)
        if rendered.deepspeed is not None:
            texts[ds_path] = json_text(rendered.deepspeed)
    return texts


def print_presets() -> int:
    for path, text in preset_texts().items():
        print(f"# --- {path}")
        print(text, end="")
    return 0


def write_presets(root: Path) -> int:
    """The presets are generated files: refreshing them replaces them (git shows any change)."""
    return write_files({root / path: text for path, text in preset_texts().items()}, force=True)


def lazy(module: str, function: str) -> Callable[[list[str]], int]:
    """A subcommand whose module is imported only when it runs: ``--help``, a dry run and a launch
    never pay for estimate, plot, compare or env."""

    def run(argv: list[str]) -> int:
        import importlib

        return int(getattr(importlib.import_module(f"launcher.{module}"), function)(argv))

    return run


def gather_sizing(spec: LaunchSpec) -> Sizing:
    """The facts ``--zero auto`` decides from (model size, GPU memory), gathered at the edge."""
    from launcher import sizing

    return sizing.gather(spec)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "configs": configs,
    "estimate": lazy("sizing", "estimate_command"),
    "status": control.status,
    "logs": control.logs,
    "cancel": control.cancel,
    "resume": resume_command,
    "plot": lazy("plot", "plot_command"),
    "check": check_command,
    "compare": lazy("compare", "compare_command"),
    "env": lazy("envreport", "env_command"),
}
