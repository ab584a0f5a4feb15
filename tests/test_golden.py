"""Golden records of the dry run, local and SLURM: every file, the submitit parameters, the sbatch
script and the node command, compared verbatim (paths and the time stamp normalised).

Refresh after an intended change with: FTLAUNCH_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from launcher.cli import main

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "dry_run_local": ["--procs", "2", "--zero", "3", "--global-batch", "16", "--micro-batch", "2"],
    "dry_run_slurm": [
        *("--slurm", "--nodes", "2", "--gpus", "8", "--zero", "2", "--micro-batch", "1", "--grad-accum", "4"),
        *("--partition", "gpu", "--time", "24:00:00", "--account", "proj", "--mem", "64G"),
        *("--sbatch", "mail-type=END", "--setup", "module load cuda"),
    ],
}


def normalise(text: str, cwd: Path) -> str:
    text = text.replace(str(cwd), "<CWD>").replace(sys.executable, "<PYTHON>")
    return re.sub(r"golden-\d{8}-\d{6}-XXXX", "golden-DATE-TIME-XXXX", text)


@pytest.mark.parametrize("case", sorted(CASES))
def test_dry_run_matches_its_golden_record(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("recipe.py").write_text("")
    assert main([*CASES[case], "--name", "golden", "--dry-run", "recipe.py", "--lr", "1e-4"]) == 0
    got = normalise(capsys.readouterr().out, tmp_path)
    record = GOLDEN / f"{case}.txt"
    if os.environ.get("FTLAUNCH_UPDATE_GOLDEN") == "1":
        record.write_text(got)
    assert record.exists(), (
        f"no golden record {record}; create it with FTLAUNCH_UPDATE_GOLDEN=1 pytest {__file__}"
    )
    assert got == record.read_text(), (
        f"the dry run differs from {record}; if the change is intended, refresh it with "
        f"FTLAUNCH_UPDATE_GOLDEN=1 pytest tests/test_golden.py and review the diff"
    )
