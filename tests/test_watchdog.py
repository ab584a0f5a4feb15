"""The hang rule, the report's reading of a stack, the restart rule and the faults' flags; the
real thing (a stopped rank, a killed one, a recipe error, a slow save) is in e2e/test_hard_faults.py."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.records import rundir
from launcher.records.restarts import restart_after
from launcher.run.stacks import innermost_frame
from launcher.run.watchdog import Beat, Watchdog, allowance, overdue

T = 30.0


def beat(
    rank: int = 0, phase: str = "training", step: int | None = 10, age: float = 0.0, **kw: float
) -> Beat:
    return Beat(rank=rank, node=0, pid=100 + rank, phase=phase, step=step, time=1000.0 - age, **kw)


@pytest.mark.parametrize(
    ("phase", "slowest_step", "slowest_long", "expected"),
    [
        ("training", 0.5, 0.0, T),  # fast steps: the timeout itself
        ("training", 12.0, 0.0, 120.0),  # slow steps: 10x the slowest
        ("first step", 0.0, 0.0, 4 * T),  # compile, allocation, warm-up
        ("saving", 0.5, 0.0, 4 * T),
        ("saving", 0.5, 50.0, 500.0),  # a save measured before: 10x it
        ("evaluating", 0.5, 3.0, 4 * T),
        ("starting", 0.0, 0.0, None),  # loading, datasets, op builds: not watched
        ("finishing", 0.0, 0.0, None),
    ],
)
def test_each_phase_gets_its_allowance(
    phase: str, slowest_step: float, slowest_long: float, expected: float | None
) -> None:
    assert allowance(beat(phase=phase, slowest_step=slowest_step, slowest_long=slowest_long), T) == expected


def test_a_hang_names_the_stopped_rank_else_the_one_behind() -> None:
    healthy = [beat(0, age=5), beat(1, age=5)]
    assert overdue(healthy, T, now=1000.0) is None
    late = [beat(0, step=11, age=T + 1), beat(1, step=10, age=T + 2)]
    hang = overdue(late, T, now=1000.0)
    assert hang is not None and hang.stuck.rank == 1 and hang.seconds == pytest.approx(T + 2)
    # rank 0 is behind, but rank 1's process is stopped: that is the cause, the others wait for it
    hang = overdue([beat(0, step=9, age=T + 1), beat(1, step=10, age=T + 1)], T, 1000.0, {101: "stopped"})
    assert hang is not None and hang.stuck.rank == 1
    assert overdue([beat(0, phase="starting", age=10 * T)], T, now=1000.0) is None


STACK = """Thread 0x00007f1 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 331 in wait
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Current thread 0x00007f2 (most recent call first):
  File "/v/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py", line 4287 in all_gather
  File "/v/lib/python3.11/site-packages/accelerate/accelerator.py", line 3012 in gather
  File "/v/lib/python3.11/site-packages/transformers/trainer.py", line 1591 in train
  File "/work/recipe.py", line 40 in main
"""


def test_the_report_shows_the_innermost_frame_of_the_training_thread() -> None:
    assert innermost_frame(STACK) == "all_gather (torch/distributed/distributed_c10d.py:4287)"
    assert innermost_frame("") is None


def test_the_watchdog_reports_a_rank_that_stopped_with_its_stack_and_the_others(tmp_path: Path) -> None:
    """Real processes: one keeps beating, one is stopped; both registered faulthandler as ranks do."""
    code = (
        "import faulthandler, json, os, signal, sys, time\n"
        "rank = int(sys.argv[1]); folder = sys.argv[2]\n"
        "stack = open(f'{folder}/logs/stacks/rank{rank}.txt', 'a')\n"
        "faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)\n"
        "def waiting_in_a_collective():\n"
        "    while True:\n"
        "        beat = {'rank': rank, 'node': 0, 'pid': os.getpid(), 'phase': 'training', 'step': 3,\n"
        "                'time': time.time() if rank else 0.0}\n"
        "        json.dump(beat, open(f'{folder}/heartbeats/rank{rank}.json', 'w'))\n"
        "        time.sleep(0.2)\n"
        "waiting_in_a_collective()\n"
    )
    (tmp_path / rundir.HEARTBEATS).mkdir()
    (tmp_path / rundir.LOGS / rundir.STACKS).mkdir(parents=True)
    ranks = [subprocess.Popen([sys.executable, "-c", code, str(r), str(tmp_path)]) for r in (0, 1)]
    try:
        time.sleep(1.0)
        ended: list[float] = []
        dog = Watchdog(tmp_path, node_rank=0, timeout=T, on_hang=lambda: ended.append(time.time()))
        rank0 = Beat.read(tmp_path / rundir.HEARTBEATS / "rank0.json")
        assert rank0 is not None
        os.kill(ranks[1].pid, signal.SIGSTOP)
        hang = overdue(dog.beats(), T, time.time(), {ranks[1].pid: "stopped"})
        assert hang is not None
        lines = dog.report(hang, detected=time.time())
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    assert lines[0].startswith("rank 1 (node 0) made no progress for")
    assert "the process is stopped" in lines[0]
    assert (
        lines[1].startswith("rank 0 (node 0) waited for") and "waiting_in_a_collective (<string>:" in lines[1]
    )
    assert rundir.read_json(tmp_path / rundir.HANGS / "node0.json")["rank"] == 1


def attempt(run: Path, number: int, state: str, restart: int | None = None, error: str | None = None) -> None:
    folder = rundir.attempt_path(run, number)
    folder.mkdir(parents=True)
    status = {"state": state, "message": f"{state} here", "restart": restart}
    rundir.write_json(folder / rundir.STATUS, status)
    if error:
        (folder / rundir.FAILURES).mkdir(parents=True)
        rundir.write_json(folder / rundir.FAILURES / "rank0.json", {"error": error, "step": 5})


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run with a complete checkpoint (the restart rule only asks whether there is one)."""
    from launcher.records import checkpoints

    monkeypatch.setattr(checkpoints, "latest_complete", lambda folder: (object(), []))
    return tmp_path


def test_restarts_follow_a_hang_or_a_failure_and_stop_at_the_bound(run: Path) -> None:
    attempt(run, 1, "hung")
    attempt(run, 2, "failed", restart=1)
    attempt(run, 3, "failed", restart=2)
    attempt(run, 4, "refused")
    first, _ = restart_after(run, 1, max_restarts=2)
    assert first is not None and (first.number, first.cause) == (1, "attempt 1 hung here")
    second, _ = restart_after(run, 2, max_restarts=2)
    assert second is not None and second.number == 2
    none, why = restart_after(run, 3, max_restarts=2)
    assert none is None and "2 restart(s) in a row already (--max-restarts 2)" in why
    assert restart_after(run, 4, max_restarts=2) == (None, "")
    assert restart_after(run, 1, max_restarts=0)[0] is None


def test_the_same_recipe_error_at_the_same_step_twice_is_not_retried(run: Path) -> None:
    attempt(run, 1, "failed", error="ValueError: bad row")
    attempt(run, 2, "failed", restart=1, error="ValueError: bad row")
    none, why = restart_after(run, 2, max_restarts=5)
    assert none is None and "the recipe raised 'ValueError: bad row' at step 5 in attempts 1 and 2" in why
    attempt(run, 3, "failed", restart=2, error="RuntimeError: Connection closed by peer 10.0.0.2:4021")
    assert restart_after(run, 3, max_restarts=5)[0] is not None  # another error: the machine's, perhaps


def test_no_restart_without_a_complete_checkpoint(tmp_path: Path) -> None:
    attempt(tmp_path, 1, "hung")
    none, why = restart_after(tmp_path, 1, max_restarts=2)
    assert none is None and why.startswith("not restarted: no complete checkpoint yet")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hang-timeout", "0"], "--hang-timeout 0: must be at least 10 seconds"),
        (["--hang-timeout", "-5"], "--hang-timeout -5: must be at least 10 seconds"),
        (["--hang-timeout", "soon"], "--hang-timeout: 'soon' is not a number"),
        (["--max-restarts", "-1"], "--max-restarts -1: must be 0 (never restart) to 100"),
        (["--max-restarts", "1000"], "--max-restarts 1000: must be 0 (never restart) to 100"),
    ],
)
def test_bad_fault_flags_are_refused_with_one_line(
    flags: list[str], message: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("recipe.py").write_text("")
    assert main(["--procs", "2", *flags, "--dry-run", "recipe.py"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("hang", "expected"), [(None, 1800), (300.0, 1800), (375.0, 1800), (900.0, 3900)])
def test_the_process_group_waits_longer_than_the_watchdog(hang: float | None, expected: int) -> None:
    """The second line of defence: gloo/NCCL give up only after the watchdog's longest allowance
    (4T) and a margin, never before transformers' own 30 minutes; set on the trainer only when
    that differs from its default, and on DeepSpeed's CPU process group by the entry."""
    from launcher.render.trainer import render_trainer_overrides
    from launcher.rules.validate import validate
    from launcher.spec.faults import LONG_FACTOR, process_group_timeout
    from launcher.spec.launchspec import Faults, LaunchSpec, Topology

    spec = LaunchSpec(recipe="r.py", topology=Topology(procs=2), faults=Faults(hang_timeout=hang))
    assert process_group_timeout(spec) == expected >= LONG_FACTOR * (hang or 300)
    overrides = render_trainer_overrides(validate(spec))
    assert overrides.get("ddp_timeout") == (expected if expected != 1800 else None)


def test_with_other_nodes_a_merely_waiting_node_lets_the_culprits_node_act_first(tmp_path: Path) -> None:
    """Patience (``run/supervisor.py`` sets it on multi-node runs): a hang whose ranks here are all
    alive is acted on ``patience`` seconds late; one with a dead or stopped rank at once."""
    folder = tmp_path / rundir.HEARTBEATS
    folder.mkdir()

    def write(pid: int, age: float) -> None:
        record = {"rank": 0, "node": 0, "pid": pid, "phase": "training", "step": 3, "time": time.time() - age}
        rundir.write_json(folder / "rank0.json", record)

    ignores_stack_signal = (
        "import signal, time; signal.signal(signal.SIGUSR1, signal.SIG_IGN); time.sleep(60)"
    )
    alive = subprocess.Popen([sys.executable, "-c", ignores_stack_signal])
    for pid, fired_at_once in ((alive.pid, False), (2**22 + 7, True)):  # a rank waiting, a rank gone
        write(pid, age=T + 1)
        ended: list[float] = []
        dog = Watchdog(tmp_path, 0, T, on_hang=functools.partial(ended.append, 0.0), patience=5.0)
        dog.start()
        time.sleep(2.5)
        assert bool(ended) == fired_at_once, pid
        write(pid, age=T + 6)
        deadline = time.monotonic() + 6  # the poll, then the stacks it asks for (3 s at most)
        while not ended and time.monotonic() < deadline:
            time.sleep(0.1)
        dog.stop()
        assert len(ended) == 1, pid
    alive.kill()
    alive.wait()


@pytest.mark.parametrize(
    ("no_requeue", "cancel", "lost", "decision", "said"),
    [
        (
            False,
            False,
            False,
            "in place",
            "restarting in place on the same nodes: restart 1/2 after attempt 1",
        ),
        (False, False, True, "requeued", "requeueing job 7: restart 1/2 after attempt 1 hung here"),
        (False, False, False, "", "not restarted: job 7 is CANCELLED"),  # scancel by hand, say
        (True, False, False, "", "not requeued (--no-requeue)"),
        (False, True, False, "", ""),
    ],
)
def test_a_slurm_head_restarts_a_hung_attempt_in_place_or_requeues_unless_told_not_or_cancelled(
    run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_requeue: bool,
    cancel: bool,
    lost: bool,
    decision: str,
    said: str,
) -> None:
    """The head's decision after a bad attempt (``backends/slurm_node.py``): the same nodes go on at
    once unless a node's task is gone, when SLURM must start it again. The requeue itself,
    ``scontrol requeue``, runs on the real cluster in tests/slurm/test_faults.py."""
    from launcher.backends import slurm_node
    from launcher.records.verdict import Verdict
    from launcher.rules.validate import validate
    from launcher.run.nodelink import Link, PeerEnd
    from launcher.spec.launchspec import LaunchSpec, Slurm, Topology

    asked: list[str] = []
    monkeypatch.setattr(slurm_node, "requeue", lambda job, exclude=(): asked.append(job) or "")
    monkeypatch.setattr(
        slurm_node, "job_state", lambda job: "CANCELLED" if "CANCELLED" in said else "RUNNING"
    )
    attempt(run, 1, "hung")
    rundir.write_json(run / rundir.RUN, {"cancelled": cancel})
    spec = LaunchSpec(topology=Topology(procs=1), slurm=Slurm(enabled=True, no_requeue=no_requeue))
    task = slurm_node.NodeTask(validate(spec), run, 1, str(run))
    link = Link(0, ["n1", "n2"], {})
    link.lost = PeerEnd(1, "n2", "lost", "is gone") if lost else None
    assert task.restart_after_attempt(Verdict("hung", 1, "hung here"), 1, "7", link) == decision
    assert asked == (["7"] if decision == "requeued" else [])
    err = capsys.readouterr().err
    assert said in err and bool(err) == bool(said), err
