"""Resume end to end: a run killed with SIGKILL, or pre-empted with SIGUSR2, continues with
``ftlaunch resume`` and trains exactly as an uninterrupted run would (CPU, 2 processes, fp32)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.records import curves, rundir
from launcher.records.runs import list_runs

from .conftest import JOBS, REPO

pytestmark = pytest.mark.e2e

STEPS, SAVE_EVERY = 30, 4
FLAGS = f"--procs 2 --micro-batch 2 --grad-accum 2 --precision fp32 --save-steps {SAVE_EVERY}"
RECIPE_ARGS = f"--max_steps {STEPS} --logging_steps 1 --report_to none --learning_rate 1e-3"


def command(runs: Path, stage: int, *extra: str) -> list[str]:
    flags = [*f"--runs-dir {runs} {FLAGS} --zero {stage} --name resumable".split(), *extra]
    return [sys.executable, "-m", "launcher", *flags, str(JOBS / "sft.py"), *RECIPE_ARGS.split()]


def losses(attempt_dir: Path) -> dict[int, float]:
    lines = (attempt_dir / rundir.METRICS).read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def run_to_end(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def wait_for_step(runs: Path, step: int, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_runs(runs)
        attempt = found[-1].latest.path if found and found[-1].latest else None
        if attempt and (attempt / rundir.METRICS).exists() and max(losses(attempt), default=0) >= step:
            return attempt
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")


def kill_everything(proc: subprocess.Popen[bytes]) -> None:
    """What a dying node does to a run: every process gone at once, no chance to clean up."""
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    gone, _ = psutil.wait_procs(tree, timeout=30)  # reaps the launcher too: read its code from psutil
    launcher = next(p for p in gone if p.pid == proc.pid)
    assert launcher.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def resume(run: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "launcher", "resume", "--runs-dir", str(run.parent), run.name]
    return run_to_end(argv, env)


def assert_same_training(resumed: dict[int, float], reference: dict[int, float], first: int) -> None:
    """The resumed attempt runs every remaining step, and each step the reference also ran (at least
    two) has its loss: weights, optimizer, schedule or data order restored wrongly show at once."""
    assert sorted(resumed) == list(range(first, STEPS + 1)), sorted(resumed)
    shared = [step for step in resumed if step in reference]
    assert len(shared) >= 2, f"only steps {shared} to compare"
    for step in shared:
        assert resumed[step] == pytest.approx(reference[step], abs=1e-6, rel=0), f"step {step}"


@pytest.fixture(scope="module")
def reference(
    e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[int, dict[int, float]]:
    """Uninterrupted curves per ZeRO stage. A killed first attempt is one up to its kill (same command,
    same seed), so the SIGKILL tests record theirs here and nothing trains twice; a stage nobody has
    recorded runs to the end once."""

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, stage: int) -> dict[int, float]:
            runs = tmp_path_factory.mktemp(f"reference{stage}")
            run_to_end(command(runs, stage), e2e_env)
            self[stage] = losses(list_runs(runs)[-1].latest.path)  # type: ignore[union-attr]
            return self[stage]  # type: ignore[no-any-return]

    return Lazy()


# Killed here: the newest checkpoint is step 12 (8 when it loses its marker), so the resumed attempt
# repeats steps the first one ran (13 and 14: the restored weights, then the restored optimizer and
# schedule), and the next save (16) is two steps away.
KILL_AFTER = 3 * SAVE_EVERY + 2


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_sigkill_then_resume_trains_like_an_uninterrupted_run(
    stage: int, reference: dict[int, dict[int, float]], e2e_env: dict[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    proc = start(command(runs, stage), e2e_env)
    try:
        first_attempt = wait_for_step(runs, KILL_AFTER)
    finally:
        kill_everything(proc)
    reference.setdefault(stage, losses(first_attempt))
    run = list_runs(runs)[-1].path
    saved = (run / rundir.CHECKPOINTS).glob("checkpoint-*")
    complete = (c for c in saved if (c / "ftlaunch_complete.json").exists())
    checkpoints = sorted(complete, key=lambda p: int(p.name.split("-")[1]))
    newest = checkpoints[-1]
    if stage == 2:
        # The newest checkpoint loses its completion marker, as if the node died while saving it.
        (newest / "ftlaunch_complete.json").unlink()
    # DDP continues through `--resume auto` on the same command line, the others through `resume`.
    done = (
        run_to_end(command(runs, stage, "--resume", "auto"), e2e_env) if stage == 0 else resume(run, e2e_env)
    )
    used = checkpoints[-2] if stage == 2 else newest
    assert f"from {used.name}" in done.stderr
    if stage == 2:
        assert f"skipping {newest.name}" in done.stderr, done.stderr[-2000:]
    second = rundir.attempt_path(run, 2)
    assert_same_training(losses(second), reference[stage], int(used.name.split("-")[1]) + 1)
    assert rundir.read_json(second / rundir.STATUS)["state"] == "finished"


def test_sigusr2_saves_at_the_step_it_arrived_and_resumes(
    reference: dict[int, dict[int, float]], e2e_env: dict[str, str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    proc = start(command(runs, 2), e2e_env)
    attempt = wait_for_step(runs, SAVE_EVERY + 2)
    os.kill(proc.pid, signal.SIGUSR2)
    signalled_at = max(losses(attempt))
    assert proc.wait(timeout=120) == 75, "a pre-empted run exits 75 (resumable)"
    saved = rundir.read_json(attempt / rundir.PREEMPTED)["step"]
    assert signalled_at <= saved <= signalled_at + 2, (signalled_at, saved)
    assert saved % SAVE_EVERY, "saved because of the signal, not the interval"
    run = attempt.parent.parent
    assert (run / rundir.CHECKPOINTS / f"checkpoint-{saved}" / "ftlaunch_complete.json").exists()
    assert rundir.read_json(attempt / rundir.STATUS)["state"] == "preempted"
    resume(run, e2e_env)
    assert_same_training(losses(rundir.attempt_path(run, 2)), reference[2], saved + 1)
    assert_plotted(run, attempts=[losses(attempt), losses(rundir.attempt_path(run, 2))], resumed_at=saved)


def assert_plotted(run: Path, attempts: list[dict[int, float]], resumed_at: int) -> None:
    """``ftlaunch plot`` on the real run: one curve through both attempts (the second from the step
    it resumed at), the takeover marked, and a PNG that is a drawn figure."""
    out = run.parent / "plot.png"
    argv = [sys.executable, "-m", "launcher", "plot", "--runs-dir", str(run.parent), run.name, "-o", str(out)]
    subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
    (curve,) = curves.curves([run])
    first, second = attempts
    expected = {**{s: v for s, v in first.items() if s <= resumed_at}, **second}
    logged = [p for p in curve.points if "loss" in p.values]  # the summary line holds only train_loss
    assert {p.step: p.values["loss"] for p in logged} == expected
    assert [p.attempt for p in logged] == [1 if s <= resumed_at else 2 for s in sorted(expected)]
    assert curve.boundaries == (curves.Boundary(attempt=2, step=resumed_at, resumed=True),)
    from matplotlib import image

    pixels = image.imread(out)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 400 and pixels.std() > 0.05


def test_a_run_saves_and_stops_before_its_time_limit(e2e_env: dict[str, str], tmp_path: Path) -> None:
    """With a deadline (on SLURM: the job's start plus --time), the ranks stop while one more step and
    a save still fit, and say why; the checkpoint is complete and the run ends before the limit.
    Then a fresh launch into those checkpoints is refused: it would train over them."""
    deadline = time.time() + 45
    env = {**e2e_env, "FTLAUNCH_DEADLINE": str(deadline)}
    out = tmp_path / "out"
    argv = [
        *command(tmp_path / "runs", 2)[: -len(RECIPE_ARGS.split())],
        *["--max_steps", "100000", "--report_to", "none", "--output_dir", str(out)],
    ]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 75, done.stderr[-3000:]
    assert time.time() < deadline
    attempt = list_runs(tmp_path / "runs")[-1].latest.path  # type: ignore[union-attr]
    record = rundir.read_json(attempt / rundir.PREEMPTED)
    assert "stopping before the time limit" in record["reason"] and "s left" in record["reason"]
    assert (out / f"checkpoint-{record['step']}" / "ftlaunch_complete.json").exists()
    again = subprocess.run(argv, cwd=REPO, env=e2e_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2
    assert "ftlaunch resume" in again.stderr and str(out) in again.stderr
