"""A new user's first launches: no tiny model built yet, no compiled DeepSpeed ops (issue 13).

The first launch was ZeRO-3, whose ranks built the tiny model under partitioned initialisation and
cached a model of empty tensors, failing that launch and every later one. Self-contained on purpose:
nothing from ``conftest.py`` (no prebuilt model, no shared op cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TRAIN = "--use_peft --max_steps 2 --logging_steps 1 --save_steps 2 --report_to none"


def launch(zero: int, runs: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``ftlaunch --procs 2 --zero ZERO jobs/sft.py ...`` from the repo root, and the run folder it made."""
    flags = ["--runs-dir", str(runs), "--procs", "2", "--zero", str(zero)]
    before = set(runs.glob("*/")) if runs.is_dir() else set()
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", *flags, "jobs/sft.py", *TRAIN.split()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    made = sorted(set(runs.glob("*/")) - before) if runs.is_dir() else []
    assert len(made) == 1, f"--zero {zero}: not one new run folder but {made}\n{proc.stdout}{proc.stderr}"
    return proc, made[0]


def finished(run: Path) -> bool:
    """Whether any ``status.json`` in the run folder (top level or an ``attempts/N/``) says finished."""
    return any(json.loads(path.read_text()).get("state") == "finished" for path in run.glob("**/status.json"))


def test_cold_start_zero3_then_zero2_and_zero0_reuse_the_cache(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny" / "tiny-qwen2"  # does not exist yet
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "FTLAUNCH_TINY_DIR": str(tiny),
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions"),  # empty: ops compile from cold
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    (tmp_path / "torch_extensions").mkdir()

    for zero in (3, 2, 0):
        proc, run = launch(zero, runs, env)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"--zero {zero} failed (exit {proc.returncode}):\n{output[-6000:]}"
        assert finished(run), f"--zero {zero}: no status.json in {run} says finished:\n{output[-3000:]}"
        assert "size mismatch" not in output
        # Built once, on the first launch, and valid ever after: never rebuilt as broken.
        assert "make_tiny: rebuilt" not in output
        assert (tiny / "model.safetensors").stat().st_size > 100_000, "the cached model holds empty tensors"
