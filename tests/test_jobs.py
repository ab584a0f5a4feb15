"""Every shipped job spec loads and validates, and opens with its launch command and arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.rules.validate import validate
from launcher.spec.jobfile import load as load_job

from .conftest import REPO

JOBS = sorted((REPO / "jobs").rglob("*.yaml"))


def test_there_are_job_specs() -> None:
    assert JOBS, "jobs/ should ship job specs"


@pytest.mark.parametrize("job", JOBS, ids=[str(j.relative_to(REPO)) for j in JOBS])
def test_job_spec_is_valid_and_documented(job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    resolved = validate(load_job(str(job.relative_to(REPO))))
    assert resolved.spec.recipe is not None and Path(resolved.spec.recipe).is_file()
    header = [line for line in job.read_text().splitlines() if line.startswith("#")]
    assert any(f"ftlaunch --job {job.relative_to(REPO)}" in line for line in header), "launch command missing"
    if resolved.batch.global_batch is not None:
        arithmetic = (
            f"{resolved.batch.micro} x {resolved.batch.grad_accum} x {resolved.world_size} "
            f"= {resolved.batch.global_batch}"
        )
        assert any(arithmetic in line for line in header), f"header should state: {arithmetic}"
