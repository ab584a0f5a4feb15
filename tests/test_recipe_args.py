"""Property: any recipe-argument list reaches the recipe unchanged, from flags and from job YAMLs,
through the plan's command and the rank's own parsing. NULs are refused up front."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.backends import make_plan
from launcher.cli.flags import spec_from_args
from launcher.cli.launch import launch_parser
from launcher.errors import SpecError
from launcher.protocol import ENTRY_MODULE
from launcher.rank import entry
from launcher.rules.validate import validate
from launcher.spec import jobfile, recipeargs
from launcher.spec.recipe import recipe_args_of, split_at_recipe

TRICKY = [
    "",
    " ",
    "--",
    "-",
    "--dry-run",
    "--procs",
    "010",
    "no",
    "on",
    "1_000",
    "~",
    "null",
    "'",
    '"',
    "$(rm -rf ~)",
    "`id`",
    "a b",
    "*",
    ";",
    "|",
    "\\",
    "\n",
    "ü",
    "日本",
    "🙂",
    "--x=y z",
    "-h",
    "{a: 1}",
]
ARG = st.one_of(
    st.sampled_from(TRICKY), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))
)
ARGS = st.lists(ARG, max_size=8)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def from_flags(args: list[str]) -> tuple[str, ...]:
    parser = launch_parser()
    ours, rest = split_at_recipe(parser, ["--procs", "1", "recipe.py", "--", *args])
    ns = parser.parse_args(ours)
    return spec_from_args(ns, ns.recipe, recipe_args_of(parser, ns.recipe, rest)).args


@SETTINGS
@given(args=ARGS)
def test_args_after_a_separator_reach_the_spec_unchanged(args: list[str]) -> None:
    assert from_flags(args) == tuple(args)


@SETTINGS
@given(args=ARGS)
def test_args_in_a_job_yaml_reach_the_spec_unchanged(args: list[str], tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    # Escaped, as YAML folds raw line breaks (NEL, LS, PS too) inside scalars, by its spec.
    job.write_text(yaml.safe_dump({"recipe": "recipe.py", "args": args}, allow_unicode=False))
    assert jobfile.load(str(job)).args == tuple(args)


@pytest.mark.parametrize(
    "word", ["010", "no", "on", "off", "yes", "1_000", "1e3", "0x1F", "2024-01-01", ".5"]
)
def test_yaml_looking_words_stay_as_written(word: str, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"recipe: recipe.py\nargs: [--value, {word}]\n")  # unquoted, as users write it
    assert jobfile.load(str(job)).args == ("--value", word)


@SETTINGS
@given(args=ARGS)
def test_the_planned_command_and_the_rank_give_the_recipe_every_argument(
    args: list[str], tmp_path: Path
) -> None:
    (tmp_path / "recipe.py").write_text("")
    spec = spec_from_args(launch_parser().parse_args(["--procs", "1", "recipe.py"]), "recipe.py", args)
    plan = make_plan(validate(spec), tmp_path / "run", 1, str(tmp_path))
    assert list(plan.argv[plan.recipe_at + 1 :]) == args
    assert shlex.split(plan.shell_command())[-len(args) - 1 :] == ["recipe.py", *args]
    rank_argv = list(plan.argv[plan.argv.index(ENTRY_MODULE) + 1 :])
    _, recipe, received = entry.parse_args(rank_argv)
    assert (recipe, received) == ("recipe.py", args)


def test_nul_is_refused_up_front() -> None:
    with pytest.raises(SpecError, match="NUL"):
        validate(spec_from_args(launch_parser().parse_args(["--procs", "1", "r.py"]), "r.py", ["a\0b"]))


def test_shell_round_trip_of_the_command(tmp_path: Path) -> None:
    """The recorded command, run by a real shell, hands the same bytes over."""
    args = ["$(id)", "a b", "'", '"', "\\n", "日本", "--"]
    quoted = " ".join(shlex.quote(a) for a in args)
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {quoted}"], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [a.encode() for a in args]


# ---------------------------------------------------------------- one reader of recipe arguments


def _value_before_one_reader(args: tuple[str, ...], flag: str) -> str | None:
    """``recipe_flag_value`` as it was before the readers shared one tokenizer (kept to compare)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


TOKENS = st.sampled_from(
    ["--lr", "--lr=3", "--use_peft", "--use_peft=false", "1e-4", "true", "q_proj", "-5", ""]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(TOKENS, max_size=8))
def test_every_reader_of_recipe_arguments_agrees_with_the_old_one(tokens: list[str]) -> None:
    """One tokenizer (``occurrences``) serves the rules, --zero auto and the pre-flight: the values
    read are those the earlier separate reader gave, for every argument list without a bare ``--``."""
    args = tuple(tokens)
    for flag in ("--lr", "--use_peft"):
        assert recipeargs.recipe_flag_value(args, flag) == _value_before_one_reader(args, flag)
        assert recipeargs.flag_given(args, flag) == (
            flag in args or any(a.startswith(flag + "=") for a in args)
        )
    found = recipeargs.parse_flags(args)
    assert set(found) == {a[2:].partition("=")[0] for a in args if a.startswith("--") and len(a) > 2}


def test_after_a_bare_double_dash_nothing_is_a_flag() -> None:
    args = ("--lr", "1", "--", "--lr", "2", "--use_peft")
    assert recipeargs.recipe_flag_value(args, "--lr") == "1"
    assert not recipeargs.flag_given(args, "--use_peft")
    assert recipeargs.parse_flags(("--target", "q", "v", "--r=8", "x")) == {"target": ["q", "v"], "r": ["8"]}
