"""Run records as they may be found: corrupt, odd or stale. Listing and detail survive any one bad
run folder, a dead or recycled launcher pid never shows as running, records are readable by the
team (mode from the umask), and credentials in recorded URLs are masked."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from launcher import redact
from launcher.cli import main
from launcher.records import rundir
from launcher.records.runs import read_run

NOW = time.time()
ODD_STATUS: dict[str, bytes] = {
    "truncated": b'{"state": "runn',
    "a list": b"[1, 2]",
    "a string": b'"running"',
    "huge pid": b'{"state": "running", "launcher_pid": 99999999999999999999, "started": 1}',
    "negative pid": b'{"state": "running", "launcher_pid": -1, "started": 1}',
    "text pid": b'{"state": "running", "launcher_pid": "abc", "started": 1}',
    "invalid utf-8": b'{"state": "\xff\xfe"}',
    "odd types": b'{"state": 5, "started": "x", "ended": [1], "message": {"a": 1}, "effective": null}',
    "huge message": json.dumps({"state": "failed", "message": "m" * 100_000}).encode(),
    "empty": b"",
}


def make_run(runs: Path, name: str, status: bytes | None, run_json: bytes = b'{"created": 1}') -> Path:
    run = runs / f"{name.replace(' ', '-')}-20261123-000000-abcd"
    (run / "attempts" / "1").mkdir(parents=True)
    (run / rundir.SPEC).write_text(json.dumps({"recipe": "r.py", "topology": {"nodes": 1, "procs": 2}}))
    (run / rundir.RUN).write_bytes(run_json)
    if status is not None:
        (run / "attempts" / "1" / rundir.STATUS).write_bytes(status)
    return run


@pytest.mark.parametrize("kind", list(ODD_STATUS))
def test_one_odd_status_never_hides_the_other_runs(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    good = make_run(
        runs, "good", json.dumps({"state": "finished", "started": NOW - 60, "ended": NOW}).encode()
    )
    bad = make_run(runs, kind, ODD_STATUS[kind])
    assert main(["status", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "finished" in lines[good.name]
    assert lines[bad.name].split()[2] in ("unreadable", "lost", "5", "failed"), lines[bad.name]
    assert "running" not in lines[bad.name]
    assert max(len(line) for line in out.splitlines()) < 300
    assert main(["status", str(bad)]) == 0
    detail = capsys.readouterr().out
    assert max(len(line) for line in detail.splitlines()) < 300


def test_an_odd_run_record_is_listed_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "good", b'{"state": "finished"}')
    odd = make_run(runs, "odd", None, run_json=b'{"created": "yesterday", "job_ids": 5, "backend": [1]}')
    (odd / "attempts" / "7").write_text("not a folder")
    assert main(["status", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "good-" in out and "odd-" in out


def test_a_recycled_pid_is_not_a_running_launcher(tmp_path: Path) -> None:
    """The pid is alive, but its process started after the attempt did: the launcher is gone."""
    younger = subprocess.Popen(["sleep", "30"])
    try:
        status = {"state": "running", "launcher_pid": younger.pid, "started": time.time() - 1000}
        run = make_run(tmp_path, "recycled", json.dumps(status).encode())
        info = read_run(run)
        assert info.state == "lost"
        assert info.latest is not None and "ftlaunch resume" in info.latest.why_lost
        status["started"] = time.time() + 5  # the same process, started before the attempt: alive
        (run / "attempts" / "1" / rundir.STATUS).write_text(json.dumps(status))
        assert read_run(run).state == "running"
    finally:
        younger.kill()
        younger.wait()


def test_records_take_the_umask_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        rundir.write_json(tmp_path / "a.json", {})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        rundir.write_json(tmp_path / "b.json", {})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("value", "recorded"),
    [
        ("https://user:hunter2@host/x", "https://user:***@host/x"),
        ("https://hf_abcdef@host", "https://***@host"),
        ("http://host/path@v1", "http://host/path@v1"),
        ("plain", "plain"),
    ],
)
def test_credentials_in_recorded_urls_are_masked(value: str, recorded: str) -> None:
    assert redact.recorded_env({"HF_ENDPOINT": value}) == {"HF_ENDPOINT": recorded}


def test_secret_named_variables_are_never_recorded() -> None:
    env = {"HF_TOKEN": "hf_x", "HF_HOME": "/h", "WANDB_API_KEY": "k", "NCCL_DEBUG": "INFO"}
    assert redact.recorded_env(env) == {"HF_HOME": "/h", "NCCL_DEBUG": "INFO"}
