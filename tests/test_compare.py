"""``ftlaunch compare`` on run folders laid out as real runs leave them (the real launches are in
tests/e2e/test_equivalence.py): the worst step is found, the tolerance decides, bad input is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.cli import compare, main
from launcher.records import rundir


def a_run(runs: Path, name: str, losses: dict[int, float], global_batch: int = 8) -> Path:
    run = rundir.create(runs, name)
    rundir.write_json(run / rundir.SPEC, {"recipe": "sft.py"})
    rundir.write_json(run / rundir.RUN, {"name": run.name, "backend": "local", "created": 1.0})
    attempt = rundir.write_attempt(run, 1, {})
    rundir.write_json(
        attempt / rundir.EFFECTIVE, {"world_size": 2, "zero_stage": 2, "global_batch_size": global_batch}
    )
    for step, loss in losses.items():
        rundir.append_json_line(attempt / rundir.METRICS, {"step": step, "loss": loss, "learning_rate": 1e-4})
    return run


BASE = {step: 3.0 / step for step in range(1, 11)}


def test_the_largest_relative_difference_and_its_step(tmp_path: Path) -> None:
    ref = a_run(tmp_path, "ref", BASE)
    close = a_run(tmp_path, "close", {s: v * (1 + 1e-7) for s, v in BASE.items()})
    off = a_run(tmp_path, "off", {**BASE, 7: BASE[7] * 1.01}, global_batch=16)
    rows = compare.compare([ref, close, off])
    assert [r.verdict for r in rows] == ["reference", "same", "DIFFERENT"]
    assert rows[1].difference == pytest.approx(1e-7, rel=1e-3)
    assert rows[2].at_step == 7 and rows[2].difference == pytest.approx(0.01 / 1.01, rel=1e-6)
    assert [r.verdict for r in compare.compare([ref, off], tolerance=0.05)] == ["reference", "same"]


def test_only_common_steps_count_and_none_is_flagged(tmp_path: Path) -> None:
    ref = a_run(tmp_path, "ref", BASE)
    shorter = a_run(tmp_path, "shorter", {s: BASE[s] for s in range(1, 4)})
    elsewhere = a_run(tmp_path, "elsewhere", {20: 1.0})
    rows = compare.compare([ref, shorter, elsewhere])
    assert (rows[1].steps, rows[1].verdict) == (3, "same")
    assert rows[2].verdict == "no common steps"


def test_command_exit_codes_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = a_run(tmp_path, "ref", BASE)
    same = a_run(tmp_path, "same", BASE)
    off = a_run(tmp_path, "off", {s: v * 2 for s, v in BASE.items()}, global_batch=16)
    assert main(["compare", "--runs-dir", str(tmp_path), "ref", "same"]) == 0
    assert main(["compare", "--runs-dir", str(tmp_path), str(ref), str(same), str(off)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["run", "world", "zero", "global"]
    assert "DIFFERENT" in next(line for line in out if line.startswith(off.name))
    assert out[-1].startswith(f"note: {off.name} has global batch 16, the reference 8")


@pytest.mark.parametrize(
    "argv", [["ref"], ["--tolerance", "nan", "ref", "same"], ["--tolerance", "-1", "ref", "same"]]
)
def test_bad_input_is_refused(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    a_run(tmp_path, "ref", BASE)
    a_run(tmp_path, "same", BASE)
    assert main(["compare", "--runs-dir", str(tmp_path), *argv]) == 2
    assert capsys.readouterr().err.startswith("ftlaunch: ")
