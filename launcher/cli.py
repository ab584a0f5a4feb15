"""``ftlaunch``: parse, validate, render, then hand over to a backend.

Imports nothing heavy: ``--help`` and ``--dry-run`` never load torch, transformers, trl, deepspeed
or submitit. Subcommands are recognised as the first word; anything else is the launch form.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from launcher import rundir
from launcher.errors import SpecError
from launcher.render import DEEPSPEED_FILE, Rendered, json_text, render_all, texts, yaml_text
from launcher.rules import Resolved, validate
from launcher.spec import LaunchSpec, coerce, from_mapping, leaves, merge

if TYPE_CHECKING:
    from launcher.backends.local import Plan

LAUNCH_EXAMPLES = """\
examples:
  ftlaunch --procs 2 --zero 2 jobs/sft.py                 # demo: 2 CPU processes, ZeRO-2, tiny model
  ftlaunch --gpus 8 --zero 1 --global-batch 64 --micro-batch 2 recipe.py --model_name_or_path M
  ftlaunch --gpus 8 --zero 3 --dry-run recipe.py          # print the files and the command only
  ftlaunch --job jobs/sft_demo.yaml --grad-accum 4        # a job spec, flags win
  ftlaunch configs --zero 2 --offload-optimizer cpu       # print the generated configs
  ftlaunch runs                                           # list run folders

subcommands: configs, runs (ftlaunch SUBCOMMAND --help)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(args[0]) if args else None
    try:
        return command(args[1:]) if command else launch(args)
    except SpecError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ftlaunch --dry-run ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ---------------------------------------------------------------- parsing


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per spec value, with the help text declared on the spec field."""
    parser.add_argument("--job", metavar="FILE", help="a job YAML; command-line flags override it")
    group = parser.add_argument_group("launch spec")
    for leaf in leaves():
        if leaf.flag.startswith("--"):
            metavar = leaf.key.split(".")[-1].upper()
            group.add_argument(leaf.flag, dest=leaf.key, metavar=metavar, help=leaf.help, default=None)


def spec_from_args(ns: argparse.Namespace, recipe: str | None, recipe_args: Sequence[str]) -> LaunchSpec:
    """YAML first (if any), then every flag the user typed on top; all problems reported together."""
    base = load_job(ns.job) if ns.job else LaunchSpec()
    problems: list[str] = []
    overrides: dict[str, Any] = {}
    for leaf in leaves():
        raw = getattr(ns, leaf.key, None)
        if raw is not None:
            overrides[leaf.key] = coerce(leaf.hint, raw, leaf.flag, problems)
    if recipe is not None:
        overrides["recipe"] = recipe
        overrides["args"] = tuple(recipe_args)
    if problems:
        raise SpecError(problems)
    return merge(base, overrides)


def load_job(path: str) -> LaunchSpec:
    file = Path(path)
    if not file.is_file():
        raise SpecError([f"--job {path}: no such file"])
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError([f"--job {path}: not valid YAML{where}: {err.problem}"]) from None
    except yaml.YAMLError as err:
        raise SpecError([f"--job {path}: not valid YAML: {err}"]) from None
    spec = from_mapping(data if data is not None else {}, path)
    if spec.recipe is not None and not Path(spec.recipe).is_absolute():
        # A recipe in a job file is relative to the job file, so jobs/*.yaml work from anywhere.
        spec = merge(spec, {"recipe": os.path.relpath(file.parent / spec.recipe)})
    return spec


def check_recipe(spec: LaunchSpec) -> None:
    if spec.recipe is None:
        raise SpecError(["no recipe given: ftlaunch [flags] RECIPE.py [recipe args] (see ftlaunch --help)"])
    if not Path(spec.recipe).is_file():
        raise SpecError([f"recipe {spec.recipe}: no such file (paths are relative to {Path.cwd()})"])


# ---------------------------------------------------------------- launch


def launch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftlaunch",
        usage="ftlaunch [launch flags] RECIPE.py [recipe args]  |  ftlaunch SUBCOMMAND ...",
        description="Launch a TRL fine-tuning script on GPUs or CPU processes, with DDP or DeepSpeed "
        "ZeRO-1/2/3, from one spec: the accelerate config, the DeepSpeed config and the trainer's "
        "arguments are generated to agree.",
        epilog=LAUNCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_flags(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the spec, every file and the command")
    parser.add_argument("recipe", nargs="?", help="the training script")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help="passed to the recipe unchanged")
    return parser


def launch(argv: list[str]) -> int:
    ns = launch_parser().parse_args(argv)
    spec = spec_from_args(ns, ns.recipe, ns.recipe_args)
    resolved = validate(spec)
    check_recipe(spec)
    from launcher.backends import local  # the backend decides nothing the spec did not

    name = spec.name or Path(spec.recipe or "run").stem
    if ns.dry_run:
        run_dir = rundir.planned_path(spec.runs_dir, name)
        rendered = render_all(resolved, deepspeed_path=str(run_dir / DEEPSPEED_FILE))
        notes = [f"a real launch here would refuse: {p}" for p in local.local_problems(resolved)]
        print_dry_run(resolved, rendered, local.plan(resolved, run_dir, local.free_port()), notes)
        return 0
    local.preflight(resolved)
    return local.run(resolved, rundir.create(spec.runs_dir, name))


def print_dry_run(resolved: Resolved, rendered: Rendered, plan: Plan, notes: list[str]) -> None:
    spec = resolved.spec
    print(f"# effective: {resolved.batch.describe()}")
    print(
        f"# precision: {spec.precision or 'from the recipe'}, zero stage: {spec.zero.stage}"
        f"{' (plain DDP)' if spec.zero.stage == 0 else ''}, world size: {resolved.world_size}"
    )
    for note in notes:
        print(f"# note: {note}")
    print(f"# run folder: {plan.run_dir}")
    print_files(rendered, prefix=f"{plan.run_dir}/")
    print("# command:")
    print(plan.shell_command())


def print_files(rendered: Rendered, prefix: str = "") -> None:
    for name, text in texts(rendered).items():
        print(f"# --- {prefix}{name}")
        print(text, end="")


# ---------------------------------------------------------------- configs


def configs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--out", metavar="DIR", help="where --write puts them (default: . for presets)")
    ns = parser.parse_args(argv)
    if ns.presets:
        return write_presets(Path(ns.out or ".")) if ns.write else print_presets()
    resolved = validate(spec_from_args(ns, None, ()))
    if ns.write and not ns.out:
        raise SpecError(["configs --write needs --out DIR (where to write the three files)"])
    out = Path(ns.out or ".")
    rendered = render_all(resolved, deepspeed_path=str(out / DEEPSPEED_FILE))
    if not ns.write:
        print_files(rendered)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts(rendered).items():
        rundir.write_atomic(out / name, text)
        print(f"wrote {out / name}")
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
    for path, text in preset_texts().items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_atomic(target, text)
        print(f"wrote {target}")
    return 0


# ---------------------------------------------------------------- runs


def runs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ftlaunch runs", description="List run folders, newest last.")
    parser.add_argument("--runs-dir", default="runs", help="where run folders live (default: runs)")
    ns = parser.parse_args(argv)
    found = rundir.list_runs(ns.runs_dir)
    if not found:
        print(f"no runs under {ns.runs_dir}/")
        return 0
    for run in found:
        s = run.status
        exit_code = s.get("exit_code", "")
        print(f"{run.path}  {run.state:<10} exit={exit_code!s:<4} {s.get('effective', '')}")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {"configs": configs, "runs": runs}
