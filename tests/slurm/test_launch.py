"""``ftlaunch --slurm`` against the real test cluster (two slurmd nodes on loopback).

Training jobs use CPU processes (gloo). Each test reads its outcome from the run folder and from
``ftlaunch status``, never from submitit's internals.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from launcher.records import rundir
from launcher.records.runs import RunInfo, list_runs

from .conftest import wait_for

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
SLEEPER = REPO / "tests" / "e2e" / "sleeper.py"
TRAIN = "--use_peft --max_steps 2 --logging_steps 1 --save_steps 2 --report_to none"
HOSTILE_ARGS = ["two words", 'it\'s "quoted"', "$HOME", "*.py", "$(touch pwned)", "a;b", "{node_rank}"]


def ftlaunch(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def losses(attempt_dir: Path) -> dict[int, float]:
    path = attempt_dir / rundir.METRICS
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def only_run(runs: Path) -> RunInfo:
    (run,) = list_runs(runs)
    return run


def sacct_state(job_id: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], env=env, capture_output=True, text=True
    ).stdout.split()
    return out[0] if out else ""


def status_row(runs: Path, env: dict[str, str], cwd: Path) -> list[str]:
    out = ftlaunch(["status", "--runs-dir", str(runs)], env, cwd, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = out.stdout.splitlines()[1:]
    return row.split()


@pytest.mark.parametrize("nodes", [1])  # 2 nodes: the last attempt of tests/slurm/test_faults.py
def test_training_job_runs_to_completion_on_every_node(
    nodes: int, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    flags = [
        "--slurm",
        "--nodes",
        str(nodes),
        "--procs",
        "1",
        "--zero",
        "2",
        "--partition",
        "debug",
        "--wait",
    ]
    done = ftlaunch(["--runs-dir", str(runs), *flags, str(JOBS / "sft.py"), *TRAIN.split()], slurm_env, REPO)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "ftlaunch: effective" in done.stdout, "--wait follows the first node's console"
    run = only_run(runs)
    attempt = rundir.attempt_path(run.path, 1)
    markers = [rundir.read_json(p) for p in (attempt / rundir.DONE).glob("rank*.json")]
    assert sorted(m["rank"] for m in markers) == list(range(nodes))
    assert {m["world_size"] for m in markers} == {nodes}, (
        "world size seen inside training = nodes x processes"
    )
    assert sorted(p.name for p in (attempt / rundir.LOGS).glob("node*.log")) == [
        f"node{k}.log" for k in range(nodes)
    ]
    assert rundir.read_json(attempt / rundir.EFFECTIVE)["world_size"] == nodes
    hosts = rundir.read_json(attempt / rundir.STATUS)["hosts"]
    assert len(set(hosts)) == nodes
    row = status_row(runs, slurm_env, REPO)
    assert row[1:3] == ["slurm", "finished"] and row[6] == "2", row
    assert row[7].startswith("loss=") and float(row[7][5:]) > 0, row
    assert sacct_state(run.job_ids[0], slurm_env) == "COMPLETED"
    (submitted,) = (run.path / rundir.SLURM).glob("*_submission.sh")
    assert submitted.read_text() == rundir.read_json(attempt / rundir.PLAN)["sbatch"], (
        "the planned sbatch ran"
    )


def test_arguments_reach_every_node_unchanged(slurm_env: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "work dir 'quoted'"
    work.mkdir()
    recipe = work / "echo args.py"
    recipe.write_text(
        "import json, os, sys\n"
        "with open(os.path.join(os.environ['ARGV_OUT'], f\"rank{os.environ['RANK']}.json\"), 'w') as f:\n"
        "    json.dump(sys.argv[1:], f)\n"
    )
    seen = work / "seen"
    seen.mkdir()
    env = {**slurm_env, "ARGV_OUT": str(seen)}
    flags = ["--slurm", "--nodes", "2", "--procs", "1", "--partition", "debug", "--wait"]
    token = "hf_" + "SlurmSecret" * 3  # concealed in the records, exported to the job by sbatch
    args = [*HOSTILE_ARGS, "--hub_token", token]
    done = ftlaunch([*flags, str(recipe), *args], env, work)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for rank in (0, 1):
        assert json.loads((seen / f"rank{rank}.json").read_text()) == args
    assert not (work / "pwned").exists()
    assert token not in done.stdout + done.stderr
    runs = work / "runs"
    assert [p for p in runs.rglob("*") if p.is_file() and token.encode() in p.read_bytes()] == []


def start_sleeper(env: dict[str, str], runs: Path, pids: Path, extra: list[str] = ()) -> RunInfo:  # type: ignore[assignment]
    flags = ["--slurm", "--nodes", "2", "--procs", "1", "--partition", "debug", *extra]
    started = ftlaunch(["--runs-dir", str(runs), *flags, str(SLEEPER), str(pids)], env, REPO, timeout=60)
    assert started.returncode == 0, started.stderr
    assert "submitted SLURM job" in started.stderr
    wait_for(lambda: len(list(pids.glob("*.pid"))) == 2, 180, "both ranks to start")
    return only_run(runs)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True)
class TimeLimited:
    run: RunInfo
    runs: Path
    pids: Path
    first: dict[str, str]  # pid file -> pid of attempt 1's ranks


@pytest.fixture(scope="module", autouse=True)
def time_limited_job(
    slurm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TimeLimited]:
    """A sleeper job with ``--time 2``, submitted as this module starts. SLURM sends it submitit's
    warning signal 90 s before the limit (30-60 s in, at its next check) and it requeues itself,
    while the other tests run beside it (every job here takes one CPU per node; the nodes have two).
    A later test checks the outcome: waiting for it inside one test cost two minutes of the suite."""
    root = tmp_path_factory.mktemp("time_limited")
    runs, pids = root / "runs", root / "pids"
    pids.mkdir()
    run = start_sleeper(slurm_env, runs, pids, ["--time", "2"])
    yield TimeLimited(run, runs, pids, {p.name: p.read_text() for p in pids.glob("*.pid")})
    subprocess.run(["scancel", run.job_ids[0]], env=slurm_env)


def test_cancel_stops_the_job_and_status_says_so(slurm_env: dict[str, str], tmp_path: Path) -> None:
    """Also while a launch follows the job with ``--wait``: it ends within seconds, saying so."""
    runs, pids = tmp_path / "runs", tmp_path / "pids"
    pids.mkdir()
    flags = ["--slurm", "--nodes", "2", "--procs", "1", "--partition", "debug", "--wait"]
    following = subprocess.Popen(
        [sys.executable, "-m", "launcher", "--runs-dir", str(runs), *flags, str(SLEEPER), str(pids)],
        env=slurm_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: len(list(pids.glob("*.pid"))) == 2, 180, "both ranks to start")
        run = only_run(runs)
        workers = [int(p.read_text()) for p in pids.glob("*.pid")]
        cancelled = ftlaunch(["cancel", "--runs-dir", str(runs), run.path.name], slurm_env, REPO, timeout=60)
        asked = time.monotonic()
        assert cancelled.returncode == 0 and "cancelled SLURM job" in cancelled.stdout, cancelled.stderr
        said, _ = following.communicate(timeout=30)
        assert time.monotonic() - asked < 15 and following.returncode == 130, said[-2000:]
        assert "ftlaunch: cancelled. Run folder:" in said, said[-2000:]
    finally:
        if following.poll() is None:
            following.kill()
    wait_for(lambda: sacct_state(run.job_ids[0], slurm_env).startswith("CANCELLED"), 60, "SLURM to cancel")
    wait_for(lambda: not any(alive(pid) for pid in workers), 60, "the ranks to end on both nodes")
    assert status_row(runs, slurm_env, REPO)[2] == "cancelled"


def test_node_that_cannot_reach_the_head_is_named(slurm_env: dict[str, str], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {**slurm_env, "FTLAUNCH_HEAD_ADDR": "no-such-head.invalid", "FTLAUNCH_PREFLIGHT_TIMEOUT": "20"}
    flags = ["--slurm", "--nodes", "2", "--procs", "1", "--partition", "debug", "--wait"]
    began = time.monotonic()
    done = ftlaunch(["--runs-dir", str(runs), *flags, str(JOBS / "sft.py")], env, REPO, timeout=300)
    took = time.monotonic() - began
    assert done.returncode != 0
    assert took < 90, f"the failure took {took:.0f} s; it must be reported within a minute or so"
    attempt = rundir.attempt_path(only_run(runs).path, 1)
    node1 = (attempt / rundir.LOGS / "node1.log").read_text()
    assert "could not reach the head at no-such-head.invalid" in node1 and "(node 1)" in node1
    message = rundir.read_json(attempt / rundir.STATUS)["message"]
    assert "(node 1)" in message, message


def test_time_limit_requeues_the_job_as_attempt_2(
    time_limited_job: TimeLimited, slurm_env: dict[str, str]
) -> None:
    """The pre-emption signal's requeue is covered, with a checkpoint, in test_faults.py. Runs
    before it and cancels the job: a sleeper requeued every minute would take CPU from its training."""
    job, pids = time_limited_job, time_limited_job.pids
    second = rundir.attempt_path(job.run.path, 2)
    wait_for(lambda: (second / rundir.STATUS).exists(), 240, "the requeued job to start attempt 2")
    wait_for(
        lambda: (
            {p.name: p.read_text() for p in pids.glob("*.pid")}.keys() == job.first.keys()
            and all(p.read_text() != job.first[p.name] for p in pids.glob("*.pid"))
        ),
        180,
        "both ranks of attempt 2 to start",
    )
    status = rundir.read_json(second / rundir.STATUS)
    # Attempt 2 has a time limit of its own: by now SLURM may have requeued it as well.
    assert status["job_id"] == job.run.job_ids[0] and status["state"] in ("running", "requeued")
    assert (rundir.attempt_path(job.run.path, 1) / rundir.PLAN).exists(), "attempt 1 is kept"
    assert rundir.read_json(second / rundir.PLAN)["attempt"] == 2
    assert only_run(job.runs).job_ids == job.run.job_ids, "a requeue is the same job"
    subprocess.run(["scancel", job.run.job_ids[0]], env=slurm_env, check=True)
