"""The plan printed by ``--dry-run`` is the plan a launch executes, and recipe arguments arrive
unchanged: no shell ever interprets them, and the written ``command.sh`` re-runs them exactly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.records import rundir
from launcher.records.runs import list_runs

pytestmark = pytest.mark.e2e

# Spaces, both quotes, globs, variables, command substitution, a separator and a node-token lookalike.
HOSTILE_ARGS = [
    "--note",
    "two words",
    'it\'s "quoted"',
    "$HOME",
    "*.py",
    "$(touch pwned)",
    "a;b",
    "{node_rank}",
]
ECHO_RECIPE = """\
import json, os, sys
with open(os.path.join(os.environ["ARGV_OUT"], f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
    json.dump(sys.argv[1:], f)
"""


def sections(dry_run: str) -> dict[str, str]:
    """File name -> text of each file the dry run printed."""
    out = {}
    for chunk in dry_run.split("# --- ")[1:]:
        header, _, body = chunk.partition("\n")
        out[Path(header.strip()).name] = body.split("\n# ")[0].rstrip("\n") + "\n"
    command = dry_run.split("(one node's)\n")[1]
    out[rundir.COMMAND] = command
    return out


def test_dry_run_plan_is_the_executed_plan_and_arguments_survive(in_tmp: Path) -> None:
    recipe = in_tmp / "echo args.py"
    recipe.write_text(ECHO_RECIPE)
    seen = in_tmp / "seen"
    seen.mkdir()
    env = {**os.environ, "ARGV_OUT": str(seen), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "launcher", "--procs", "2", "--name", "plan", str(recipe), *HOSTILE_ARGS]

    dry = subprocess.run(
        [*argv[:3], "--dry-run", *argv[3:]], cwd=in_tmp, env=env, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    real = subprocess.run(argv, cwd=in_tmp, env=env, capture_output=True, text=True, timeout=300)
    assert real.returncode == 0, (real.stdout + real.stderr)[-3000:]

    (run,) = list_runs(in_tmp / "runs")
    attempt = rundir.attempt_path(run.path, 1)
    planned_name = re.search(r"runs/(plan-\d{8}-\d{6}-XXXX)", dry.stdout)
    assert planned_name is not None
    for name, text in sections(dry.stdout).items():
        written = (attempt / name).read_text()
        assert written == text.replace(planned_name.group(1), run.path.name), (
            f"{name} differs from the dry run"
        )

    for rank in (0, 1):
        assert json.loads((seen / f"rank{rank}.json").read_text()) == HOSTILE_ARGS
    assert not (in_tmp / "pwned").exists()

    # command.sh is a record: run again by hand, the ranks refuse to train into the ended attempt
    # (its quoting is checked by tests/test_recipe_args.py through shlex and a real shell).
    for rank_file in seen.iterdir():
        rank_file.unlink()
    status = (attempt / rundir.STATUS).read_text()
    rerun = subprocess.run(
        ["bash", str(attempt / rundir.COMMAND)], env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode != 0 and "already ran (finished)" in rerun.stdout + rerun.stderr
    assert list(seen.iterdir()) == [] and (attempt / rundir.STATUS).read_text() == status
    assert not (in_tmp / "pwned").exists()
