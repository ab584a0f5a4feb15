"""The GPU benchmark's pieces that run without a GPU: it has never run on one here (no GPU machine
was lent), so what it reads from ftlaunch itself is held against the real output."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_train  # noqa: E402  (bench/ is not a package; its scripts import benchlib beside them)


def test_the_estimate_table_is_read_for_every_stage(tmp_path: Path) -> None:
    """``estimate_totals`` parses ``ftlaunch estimate``'s table: a format change there would leave the
    GPU results without their estimate column, silently."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "qwen2", **gpu_train.ARCHITECTURE}))
    ns = argparse.Namespace(gpus=8, seq_len=1024, micro_batch=4)
    totals = gpu_train.estimate_totals(config, ns)
    assert sorted(totals) == [0, 1, 2, 3], totals
    # 494M parameters in full fine-tuning: each stage partitions more, so needs less per GPU.
    assert totals[0] > totals[1] > totals[2] > totals[3] > 1.0, totals


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine runs the benchmark")
def test_without_a_gpu_the_benchmark_refuses_and_says_why() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_train.py")], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "no NVIDIA GPU" in done.stderr and "Run it on a GPU machine" in done.stderr
