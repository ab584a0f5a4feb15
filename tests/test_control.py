"""Job control read from a run folder alone: logs pick one rank out of a node's log, follow ends
with the attempt, status lists runs and their checkpoints, resume says what it found."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.errors import SpecError
from launcher.records import rundir
from launcher.records.resume import decide
from launcher.spec.launchspec import LaunchSpec, Topology

NODE0 = "[rank0]:step 1\n[rank1]:other rank\nnode message\n[rank0]:step 2\n"


def a_run(tmp_path: Path, per_node: int = 2) -> Path:
    run = rundir.create(tmp_path / "runs", "demo")
    rundir.write_json(run / rundir.SPEC, {"recipe": "sft.py", "topology": {"nodes": 2, "procs": per_node}})
    rundir.write_json(run / rundir.RUN, {"name": run.name, "backend": "local", "created": 1.0, "job_ids": []})
    attempt = rundir.write_attempt(run, 1, {rundir.PLAN: f'{{"per_node": {per_node}}}\n'})
    (attempt / rundir.LOGS / "node0.log").write_text(NODE0)
    (attempt / rundir.LOGS / "node1.log").write_text("[rank2]:on the second node\n")
    return run


def test_logs_show_one_rank_with_the_nodes_own_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = a_run(tmp_path)
    assert main(["logs", str(run)]) == 0
    assert capsys.readouterr().out == "[rank0]:step 1\nnode message\n[rank0]:step 2\n"
    assert main(["logs", "--runs-dir", str(tmp_path / "runs"), "demo", "--rank", "2"]) == 0
    assert capsys.readouterr().out == "[rank2]:on the second node\n"


def test_follow_prints_what_is_appended_and_ends_with_the_attempt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = a_run(tmp_path)
    attempt = rundir.attempt_path(run, 1)

    def finish_later() -> None:
        time.sleep(1.5)
        with open(attempt / rundir.LOGS / "node0.log", "a") as log:
            log.write("[rank0]:step 3\n")
        rundir.update_status(attempt, state="finished")

    writer = threading.Thread(target=finish_later)
    writer.start()
    assert main(["logs", str(run), "--follow"]) == 0
    writer.join()
    assert capsys.readouterr().out.endswith("[rank0]:step 2\n[rank0]:step 3\n")


def test_a_missing_attempt_or_rank_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = a_run(tmp_path)
    assert main(["logs", str(run), "--attempt", "7"]) == 2
    assert "--attempt 7" in capsys.readouterr().err


def test_resume_without_a_complete_checkpoint_says_what_it_found(tmp_path: Path) -> None:
    run = a_run(tmp_path)
    half = run / rundir.CHECKPOINTS / "checkpoint-4"
    half.mkdir(parents=True)
    (half / "trainer_state.json").write_text("{}")
    with pytest.raises(SpecError, match=r"no complete checkpoint .*\(checkpoint-4 \(no marker"):
        decide(run, LaunchSpec(recipe="sft.py", topology=Topology(nodes=2, procs=2)))


def test_status_lists_runs_and_details_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = a_run(tmp_path)
    rundir.update_status(rundir.attempt_path(run, 1), state="finished", effective="micro 1 x ...")
    (run / rundir.CHECKPOINTS / "checkpoint-2").mkdir(parents=True)
    assert main(["status", "--runs-dir", str(tmp_path / "runs")]) == 0
    (header, row) = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["RUN", "BACKEND", "STATE"] and row.split()[1:4] == [
        "local",
        "finished",
        "2x2cpu",
    ]
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "attempt 1: finished" in out and "checkpoint-2: INCOMPLETE - no marker" in out


def test_status_lists_runs_oldest_first_as_its_help_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest run is the last line, next to the prompt; creation time decides, not the name."""
    runs = tmp_path / "runs"
    for name, created in (("b-newest", 300.0), ("c-oldest", 100.0), ("a-middle", 200.0)):
        run = rundir.create(runs, name)
        rundir.write_json(run / rundir.SPEC, {"recipe": "sft.py", "topology": {"nodes": 1, "procs": 1}})
        rundir.write_json(run / rundir.RUN, {"name": run.name, "backend": "local", "created": created})
    assert main(["status", "--runs-dir", str(runs)]) == 0
    names = [line.split()[0].split("-")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == ["c", "a", "b"]
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "oldest first (the newest last" in " ".join(capsys.readouterr().out.split())
