"""The CLI's promises: instant help, a complete dry run, and no heavy import on either path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.cli import COMMANDS, main
from launcher.protocol import ENTRY_MODULE

HEAVY = ("torch", "transformers", "trl", "deepspeed", "submitit", "peft", "accelerate")


def heavy_modules_after(argv: list[str], cwd: Path) -> tuple[int, list[str]]:
    """The command's exit code and the heavy modules it loaded: a command that crashed before it
    imported anything would otherwise look light."""
    code = (
        "import json, sys\nfrom launcher.cli import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as exit_:\n"
        "    code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)\n"
        f"print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    exit_code, modules = json.loads(out.stdout.strip().splitlines()[-1])
    return int(exit_code), list(modules)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["configs", "--help"],
        ["status", "--help"],
        ["status"],
        ["logs", "--help"],
        ["cancel", "--help"],
        ["--gpus", "8", "--zero", "3", "--dry-run", "recipe.py"],
        ["--procs", "2", "--zero", "2", "--micro-batch", "1", "--dry-run", "recipe.py"],
        ["configs", "--presets"],
    ],
)
def test_fast_paths_import_nothing_heavy(argv: list[str], in_tmp: Path) -> None:
    assert heavy_modules_after(argv, in_tmp) == (0, [])


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_help_renders(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_dry_run_prints_numbers_files_and_command(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--gpus",
        "8",
        "--zero",
        "3",
        "--global-batch",
        "64",
        "--micro-batch",
        "2",
        "--precision",
        "bf16",
        "--dry-run",
        "recipe.py",
        "--learning_rate",
        "1e-4",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "# effective: micro 2 x accumulation 4 x world 8 = global 64" in out
    sections = dict(
        (chunk.split("\n", 1)[0].strip(), chunk.split("\n", 1)[1]) for chunk in out.split("# --- ")[1:]
    )
    names = [Path(n).name for n in sections]
    assert names == [
        "decided.json",
        "accelerate.yaml",
        "ds_config.json",
        "trainer_overrides.json",
        "env.json",
    ]
    accel = yaml.safe_load(next(v for k, v in sections.items() if k.endswith(".yaml")))
    assert accel["num_processes"] == 8 and accel["distributed_type"] == "DEEPSPEED"
    ds_text = next(v for k, v in sections.items() if k.endswith("ds_config.json")).split("# ---")[0]
    ds = json.loads(ds_text)
    assert (ds["train_batch_size"], ds["gradient_accumulation_steps"], ds["bf16"]["enabled"]) == (64, 4, True)
    assert accel["deepspeed_config"]["deepspeed_config_file"].endswith("ds_config.json")
    command = out.split("command.sh (one node's)\n")[1].strip()
    assert "accelerate.commands.launch" in command and ENTRY_MODULE in command
    assert command.endswith("recipe.py --learning_rate 1e-4")
    assert not (in_tmp / "runs").exists(), "--dry-run must write nothing"


def test_flags_override_the_job_yaml(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "job.yaml").write_text(
        "recipe: recipe.py\nargs: [--max_steps, '5']\ntopology: {procs: 2}\n"
        "zero: {stage: 2}\nbatch: {micro: 1, grad_accum: 8}\n"
    )
    assert main(["--job", "job.yaml", "--grad-accum", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "micro 1 x accumulation 2 x world 2 = global 4" in out
    assert out.strip().endswith("recipe.py --max_steps 5")


def test_configs_write_puts_three_matching_files(in_tmp: Path) -> None:
    assert (
        main(
            [
                "configs",
                "--gpus",
                "4",
                "--zero",
                "2",
                "--micro-batch",
                "2",
                "--grad-accum",
                "2",
                "--write",
                "--out",
                "cfg",
            ]
        )
        == 0
    )
    accel = yaml.safe_load((in_tmp / "cfg/accelerate.yaml").read_text())
    ds = json.loads((in_tmp / "cfg/ds_config.json").read_text())
    trainer = json.loads((in_tmp / "cfg/trainer_overrides.json").read_text())
    assert Path(accel["deepspeed_config"]["deepspeed_config_file"]) == Path("cfg/ds_config.json")
    assert ds["train_micro_batch_size_per_gpu"] == trainer["per_device_train_batch_size"] == 2
    assert ds["gradient_accumulation_steps"] == trainer["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 16


def test_configs_out_without_write_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out`` alone used to print the files and write nothing, silently."""
    for argv in (["configs", "--zero", "2", "--out", "cfg"], ["configs", "--presets", "--out", "cfg"]):
        assert main(argv) == 2
        assert "configs --out cfg: nothing is written without --write" in capsys.readouterr().err
        assert not (in_tmp / "cfg").exists()
