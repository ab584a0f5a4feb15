"""``ftlaunch env`` and ``--version`` tell the truth about the installed stack without importing it,
and every launch records the same facts (and the recipe's git commit) in ``environment.json``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.backends import make_plan
from launcher.cli import main
from launcher.launch import write_plan
from launcher.machine import envreport
from launcher.records import rundir
from launcher.rules.validate import validate
from launcher.spec.launchspec import LaunchSpec, Topology

HEAVY = (
    "torch",
    "transformers",
    "trl",
    "deepspeed",
    "accelerate",
    "submitit",
    "matplotlib",
    "peft",
    "datasets",
    "bitsandbytes",
)


def run_cli(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """``main(argv)`` in a fresh interpreter: its stdout, and the heavy modules it left imported."""
    code = (
        "import sys, json\nfrom launcher.cli import main\ncode = main(sys.argv[1:])\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\nsys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True, check=True, env=env
    )
    *out, modules = done.stdout.splitlines()
    return "\n".join(out) + "\n", json.loads(modules)


def git(folder: Path, *argv: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    done = subprocess.run(["git", "-C", str(folder), *identity, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def a_repo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.py").write_text("print('hello')\n")
    git(folder, "init", "-q")
    git(folder, "add", "recipe.py")
    git(folder, "commit", "-q", "-m", "recipe")
    return folder


# ---------------------------------------------------------------- --version and env


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    out, heavy = run_cli(["--version"], tmp_path)
    assert out == f"ftlaunch {importlib.metadata.version('ftlaunch')}\n"
    assert heavy == []


def test_env_shows_every_library_with_its_installed_version_and_imports_none(tmp_path: Path) -> None:
    out, heavy = run_cli(["env"], tmp_path)
    assert heavy == [], f"ftlaunch env imported {heavy}"
    lines = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines() if line[:1] != " "}
    for name in envreport.LIBRARIES:
        try:
            expected = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            expected = "not installed"
        assert lines[name] == expected, name
    assert lines["ftlaunch"] == importlib.metadata.version("ftlaunch")
    assert lines["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    for fact in ("GPUs", "DeepSpeed", "SLURM", "variables"):
        assert fact in lines


def test_env_json_holds_the_same_facts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["libraries"]["deepspeed"] == importlib.metadata.version("deepspeed")
    assert found["cpus"] == len(os.sched_getaffinity(0))
    assert set(found["deepspeed_ops"]) == {"cache", "jit_built", "prebuilt"}


def test_env_is_fast(tmp_path: Path) -> None:
    envreport.gather(os.environ, check_slurm=False)  # warm the metadata caches once
    started = time.perf_counter()
    envreport.gather(os.environ, check_slurm=False)
    assert time.perf_counter() - started < 0.5


def test_variables_shown_but_never_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "NCCL_DEBUG": "INFO",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "OMP_NUM_THREADS": "4",
        "MASTER_ADDR": "10.0.0.1",
        "GLOO_SOCKET_IFNAME": "eth0",
        "TORCH_DISTRIBUTED_DEBUG": "DETAIL",
        "NCCL_AUTH_TOKEN": "s3cret-value",  # named like a secret: never shown
        "TORCH_HUB_URL": "https://me:hunter2@hub.example.org",  # credentials in a URL: masked
        "TORCH_NOTE": "hf_" + "a" * 34,  # a token-looking value: masked
        "HOME": "/home/me",  # not one of the families shown
    }
    shown = envreport.variables(env)
    assert shown == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "GLOO_SOCKET_IFNAME": "eth0",
        "MASTER_ADDR": "10.0.0.1",
        "NCCL_DEBUG": "INFO",
        "OMP_NUM_THREADS": "4",
        "TORCH_DISTRIBUTED_DEBUG": "DETAIL",
        "TORCH_HUB_URL": "https://me:***@hub.example.org",
        "TORCH_NOTE": "***",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    text = envreport.render(envreport.gather(os.environ, check_slurm=False))
    assert "NCCL_DEBUG=INFO" in text and "s3cret" not in text and "hunter2" not in text
    assert "NCCL_AUTH_TOKEN" not in text


# ---------------------------------------------------------------- gatherers


def test_built_ops_are_those_with_a_library(tmp_path: Path) -> None:
    """The layout torch's JIT loader leaves: one folder per op, the .so once the build finished."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}{sys.abiflags}"
    cache = tmp_path / "cache"
    (cache / "torch_extensions" / f"{py}_cu124" / "cpu_adam").mkdir(parents=True)
    (cache / "torch_extensions" / f"{py}_cu124" / "cpu_adam" / "cpu_adam.so").write_bytes(b"\x7fELF")
    (cache / "torch_extensions" / f"{py}_cu124" / "fused_adam").mkdir()  # a build that never finished
    (cache / "torch_extensions" / f"{py}_cu124" / "fused_adam" / "lock").touch()
    (cache / "torch_extensions" / "py27_cpu" / "cpu_lion").mkdir(parents=True)  # another Python's
    (cache / "torch_extensions" / "py27_cpu" / "cpu_lion" / "cpu_lion.so").touch()
    assert envreport.jit_built_ops({"XDG_CACHE_HOME": str(cache)}) == [f"{py}_cu124/cpu_adam"]
    flat = tmp_path / "ext"
    (flat / "cpu_adagrad").mkdir(parents=True)
    (flat / "cpu_adagrad" / "cpu_adagrad.so").touch()
    assert envreport.jit_built_ops({"TORCH_EXTENSIONS_DIR": str(flat)}) == ["cpu_adagrad"]
    assert envreport.jit_built_ops({"TORCH_EXTENSIONS_DIR": str(tmp_path / "absent")}) == []


def test_prebuilt_ops_match_deepspeeds_own_record() -> None:
    """The oracle is DeepSpeed's own ``installed_ops`` (importing it here is fine: not the CLI)."""
    from deepspeed.git_version_info import installed_ops

    assert envreport.prebuilt_ops() == sorted(op for op, built in installed_ops.items() if built)


def test_git_state_of_a_clean_a_dirty_and_no_repository(tmp_path: Path) -> None:
    repo = a_repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD")
    assert envreport.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "recipe.py").write_text("print('changed')\n")
    assert envreport.git_state(repo) == {"commit": head, "dirty": True}
    git(repo, "checkout", "-q", "recipe.py")
    (repo / "new_helper.py").write_text("")  # untracked: not in the commit either
    assert envreport.git_state(repo) == {"commit": head, "dirty": True}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert envreport.git_state(plain) is None


SINFO = {
    "reachable": ("printf 'debug*\\ngpu\\ngpu\\n'", {"state": "reachable", "partitions": ["debug*", "gpu"]}),
    "unreachable": (
        "echo 'sinfo: error: Unable to contact slurm controller (connect failure)' >&2\n"
        "echo more >&2\nexit 1",
        {
            "state": "unreachable",
            "error": "sinfo: error: Unable to contact slurm controller (connect failure)",
        },
    ),
    "hanging": ("sleep 30", {"state": "unreachable", "error": "no answer in 0.5 s"}),
}


@pytest.mark.parametrize("case", list(SINFO))
def test_slurm_reach_reads_sinfo(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sinfo cannot run here without a cluster: a stand-in script with its output shapes does."""
    script, expected = SINFO[case]
    (tmp_path / "sinfo").write_text(f"#!/bin/sh\n{script}\n")
    (tmp_path / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert envreport.slurm_reach(timeout=0.5) == expected
    assert envreport.slurm_line(expected).startswith(case if case != "hanging" else "unreachable")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert envreport.slurm_reach() == {"state": "not installed"}


# ---------------------------------------------------------------- environment.json at launch


def test_write_plan_records_the_environment_and_the_recipes_commit(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_plan`` is the edge every launch (and resume) passes: the file is written there."""
    a_repo(in_tmp)
    (in_tmp / "recipe.py").write_text("print('edited')\n")
    monkeypatch.setenv("NCCL_DEBUG", "WARN")
    resolved = validate(LaunchSpec(recipe="recipe.py", topology=Topology(procs=2)))
    run_dir = rundir.create(in_tmp / "runs", "demo")
    the_plan = make_plan(resolved, run_dir, 1, str(in_tmp))
    started = time.perf_counter()
    write_plan(the_plan, resolved)
    took = time.perf_counter() - started
    found = rundir.read_json(rundir.attempt_path(run_dir, 1) / rundir.ENVIRONMENT)
    assert found["recipe"] == {
        "path": str(in_tmp / "recipe.py"),
        "git": {"commit": git(in_tmp, "rev-parse", "HEAD"), "dirty": True},
    }
    assert found["libraries"]["torch"] == importlib.metadata.version("torch")
    assert found["variables"] == {"NCCL_DEBUG": "WARN"}
    assert found["slurm"] == {"state": "not checked (local launch)"}
    assert took < 2.0, f"write_plan took {took:.2f} s"  # ~0.1 s here; the bound allows a busy machine
    text = envreport.render(found)
    assert "recipe.py" in text and "with uncommitted changes" in text
