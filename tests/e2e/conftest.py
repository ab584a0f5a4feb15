"""End-to-end fixtures: a tiny local model built once, DeepSpeed's op cache kept in the repo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from launcher.records import rundir
from launcher.records.runs import list_runs

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
# Few, short steps: enough for a logged loss and one checkpoint on every rank.
TRAIN_ARGS = "--max_steps 2 --logging_steps 1 --save_steps 2 --report_to none"


@pytest.fixture(scope="session")
def e2e_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for launches: offline, tiny model prebuilt, op cache outside the user's home."""
    tiny = tmp_path_factory.mktemp("tiny") / "tiny-qwen2"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FTLAUNCH_TINY_DIR": str(tiny),
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")
        ),
        "TOKENIZERS_PARALLELISM": "false",
    }
    subprocess.run(
        [sys.executable, str(JOBS / "make_tiny.py"), str(tiny)], env=env, check=True, capture_output=True
    )
    return env


@dataclass
class Launch:
    code: int
    output: str
    run_dir: Path | None

    @property
    def attempt_dir(self) -> Path:
        assert self.run_dir is not None
        latest = rundir.latest_attempt(self.run_dir)
        assert latest is not None, f"no attempt in {self.run_dir}"
        return latest

    def json(self, name: str) -> Any:
        """A file of the newest attempt."""
        return json.loads((self.attempt_dir / name).read_text())


def ftlaunch(flags: str, recipe: str, recipe_args: str, env: dict[str, str], runs: Path) -> Launch:
    """``ftlaunch FLAGS jobs/RECIPE RECIPE_ARGS``, written as the user would type it."""
    argv = [*flags.split(), str(JOBS / recipe), *recipe_args.split()]
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", "--runs-dir", str(runs), *argv],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order a terminal would show it
        text=True,
        timeout=420,
    )
    found = list_runs(runs)
    return Launch(proc.returncode, proc.stdout, found[-1].path if found else None)
