"""No secret is written down: tokens in recipe arguments, in the environment and in URL
credentials never appear in the run folder, the console or the dry run, while the recipe gets them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TOKEN = "hf_" + "Zq9" * 12
KEY = "sk-" + "Kx7" * 9
PASSWORD = "pw-Hunter2-secret"
ENV_TOKEN = "hf_" + "Env" * 12

pytestmark = pytest.mark.e2e


def test_secrets_reach_the_recipe_and_nothing_else(tmp_path: Path) -> None:
    args = [
        "--hub_token",
        TOKEN,
        f"--api_key={KEY}",
        TOKEN,
        "--mirror",
        f"https://me:{PASSWORD}@example.org/x",
    ]
    env = {
        **os.environ,
        "HF_TOKEN": ENV_TOKEN,
        "HF_ENDPOINT": f"https://me:{PASSWORD}@hub.example.org",
        "ARGV_OUT": str(tmp_path / "argv"),
    }
    runs = tmp_path / "runs"
    base = [sys.executable, "-m", "launcher", "--procs", "2", "--runs-dir", str(runs), "--name", "leak"]
    dry = subprocess.run(
        [*base[:3], "--dry-run", *base[3:], str(HERE / "argv_recorder.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    real = subprocess.run(
        [*base, str(HERE / "argv_recorder.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert dry.returncode == 0 and real.returncode == 0, real.stderr[-2000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"argv.{rank}").read_text()) == args
    secrets = [TOKEN, KEY, PASSWORD, ENV_TOKEN]
    written = {str(p): p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    assert any(p.endswith("host_env.json") for p in written)
    for secret in secrets:
        for text, where in [(dry.stdout + dry.stderr, "--dry-run"), (real.stdout + real.stderr, "console")]:
            assert secret not in text, f"{secret[:6]}... printed by {where}"
        leaks = [p for p, content in written.items() if secret.encode() in content]
        assert leaks == [], f"{secret[:6]}... written to {leaks}"
    host_env = next(json.loads(c) for p, c in written.items() if p.endswith("host_env.json"))
    assert host_env["HF_ENDPOINT"] == "https://me:***@hub.example.org" and "HF_TOKEN" not in host_env
