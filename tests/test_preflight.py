"""Pre-flight of the recipe: a tutorial-era script is refused before anything starts, with every
outdated keyword, its line and its replacement in one message; the project's own recipes and job
files pass with no note at all (a false alarm would stop a launch that works)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.machine import preflight
from launcher.spec import jobfile
from tests.test_cli import heavy_modules_after

REPO = Path(__file__).resolve().parents[1]
RECIPES = Path(__file__).parent / "recipes"
TUTORIAL = RECIPES / "tutorial_2024_sft.py"
HERE = preflight.Where(on_cpu=True, capabilities=None, cwd=REPO)


def ftlaunch(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def outdated_lines(path: Path) -> dict[int, str]:
    """Line number -> the keyword the fixture marks ``# OUTDATED`` there."""
    lines = path.read_text().splitlines()
    return {i: line.split("=")[0].strip() for i, line in enumerate(lines, 1) if line.endswith("# OUTDATED")}


def test_a_tutorial_era_script_is_refused_before_anything_starts(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    started = time.monotonic()
    done = ftlaunch("--procs", "2", "--zero", "2", "--runs-dir", str(runs), str(TUTORIAL), cwd=tmp_path)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert took < 10, f"the check took {took:.1f} s"
    assert not runs.exists(), "nothing may be written (or spawned) for a recipe that would crash"
    assert "Traceback" not in done.stderr
    expected = outdated_lines(TUTORIAL)
    assert len(expected) == 6
    for line, keyword in expected.items():
        said = [s for s in done.stderr.splitlines() if f"tutorial_2024_sft.py:{line}: " in s]
        assert said and f"({keyword}=" in said[0], f"line {line} ({keyword}) not named:\n{done.stderr}"
    for replacement in ("warmup_steps", "eval_strategy=", "processing_class=", "SFTConfig(max_length=",
                        "SFTConfig(packing="):  # fmt: skip
        assert replacement in done.stderr


def test_the_completion_only_collator_is_refused_with_what_replaces_it(tmp_path: Path) -> None:
    done = ftlaunch("check", str(RECIPES / "completion_collator.py"), cwd=tmp_path)
    assert done.returncode == 2
    (message,) = [line for line in done.stderr.splitlines() if "DataCollatorForCompletionOnlyLM" in line]
    assert "completion_collator.py:4:" in message
    assert "completion_only_loss" in message and "assistant_only_loss" in message


def job_launches() -> list[tuple[str, tuple[str, ...], bool]]:
    """(recipe, args, on CPU) of every job YAML, plus every script in jobs/ with no arguments."""
    found = []
    for job in sorted((REPO / "jobs").rglob("*.yaml")):
        spec = jobfile.load(str(job))
        assert spec.recipe is not None
        found.append((str(REPO / spec.recipe), spec.args, spec.topology.on_cpu))  # relative to the repo
    found += [(str(p), (), True) for p in sorted((REPO / "jobs").glob("*.py"))]
    return found


@pytest.mark.parametrize(
    "recipe, args, on_cpu", job_launches(), ids=lambda v: Path(v).name if isinstance(v, str) else ""
)
def test_the_projects_recipes_and_jobs_pass_with_no_note(
    recipe: str, args: tuple[str, ...], on_cpu: bool
) -> None:
    where = preflight.Where(on_cpu, None, REPO)
    assert preflight.check(Path(recipe), args, where) == []


@pytest.mark.parametrize(
    "recipe, args",
    [
        ("sft.py", "--use_peft --assistant_only_loss --max_steps 10 --logging_steps 1 --report_to none"),
        ("sft.py", "--use_peft --load_in_4bit --lora_target_modules all-linear --no_remove_unused_columns"),
        (
            "sft.py",
            "--peft_type prefix --num_virtual_tokens 20 --dataset_name jobs/data/sft_prompt_completion.jsonl",
        ),
        ("dpo.py", "--use_peft --max_steps 2 --per-device-train-batch-size 2 --beta 0.2"),
        ("grpo.py", "--per_device_train_batch_size 2 --num_generations 4 --max_completion_length 8"),
        ("tutorial_sft.py", "out/tutorial"),
    ],
)
def test_documented_launches_pass(recipe: str, args: str) -> None:
    assert preflight.check(REPO / "jobs" / recipe, args.split(), HERE) == []


def messages(recipe: str, args: str, where: preflight.Where = HERE) -> list[str]:
    return [f.message for f in preflight.check(REPO / "jobs" / recipe, args.split(), where)]


def test_recipe_arguments_its_parser_would_refuse() -> None:
    found = messages("sft.py", "--lora_rr 8 --evaluation_strategy steps --use_peft --no_use_peft")
    assert found == [
        "recipe argument --evaluation_strategy: renamed: use --eval_strategy",
        "recipe argument --lora_rr: not an argument of SFTScriptArguments, SFTConfig, ModelConfig; "
        "did you mean --lora_r?",
    ]


def test_values_that_cannot_work_here(tmp_path: Path) -> None:
    missing = next(
        name for name, dists in preflight.INTEGRATIONS.items() if not any(map(preflight.installed, dists))
    )
    found = messages(
        "sft.py", f"--optim paged_adamw_8bit --report_to {missing} --model_name_or_path ./no/model"
    )
    assert len(found) == 3, found
    assert "needs CUDA" in found[0] or "needs CUDA" in " ".join(found)
    assert any(f"{missing} is not installed" in m for m in found)
    assert any("./no/model: no such file or folder" in m for m in found)
    on_gpus = preflight.Where(on_cpu=False, capabilities=(7.0, 7.0), cwd=REPO)
    assert messages("sft.py", "--optim paged_adamw_8bit", on_gpus) == []
    assert "have no bf16" in messages("sft.py", "--bf16", on_gpus)[0]
    assert messages("sft.py", "--bf16", preflight.Where(False, (8.0,), REPO)) == []


def test_what_is_known_only_at_run_time_gets_no_check(tmp_path: Path) -> None:
    recipe = tmp_path / "dynamic.py"
    recipe.write_text(
        "import sys\nfrom transformers import HfArgumentParser, TrainingArguments\n"
        "kwargs = {'warmup_ratio': 0.1}\nargs = TrainingArguments(output_dir='o', **kwargs)\n"
        "types = (TrainingArguments,) if sys.argv else ()\nparser = HfArgumentParser(types)\n"
        "from somewhere import Mystery\nHfArgumentParser((Mystery, TrainingArguments))\n"
    )
    assert preflight.check(recipe, ["--anything", "1"], HERE) == []


def test_a_syntax_error_is_found_first(tmp_path: Path) -> None:
    recipe = tmp_path / "broken.py"
    recipe.write_text("from trl import SFTConfig\nSFTConfig(output_dir='o'\n")
    (finding,) = preflight.check(recipe, [], HERE)
    assert finding.line == 2 and "not valid Python" in finding.message


def test_dry_run_shows_the_findings_as_notes_and_imports_nothing_heavy(tmp_path: Path) -> None:
    done = ftlaunch("--procs", "2", "--dry-run", str(TUTORIAL), cwd=tmp_path)
    assert done.returncode == 0
    notes = [
        line
        for line in done.stdout.splitlines()
        if line.startswith("# note: a real launch here would refuse")
    ]
    assert len(notes) == 7
    assert heavy_modules_after(["--procs", "2", "--dry-run", str(TUTORIAL)], tmp_path) == (0, [])
    assert heavy_modules_after(["check", str(REPO / "jobs" / "sft.py"), "--use_peft"], tmp_path) == (0, [])


def test_check_subcommand_passes_a_good_recipe(tmp_path: Path) -> None:
    done = ftlaunch(
        "check", "--procs", "2", str(REPO / "jobs" / "grpo.py"), "--num_generations", "4", cwd=REPO
    )
    assert done.returncode == 0 and "no problems found" in done.stdout, done.stderr
    assert os.listdir(tmp_path) == []


def test_a_slow_cpu_optimizer_under_offload_is_a_note_not_a_refusal(tmp_path: Path) -> None:
    offloaded = preflight.Where(on_cpu=True, capabilities=None, cwd=REPO, offload_optimizer=True)
    (finding,) = preflight.check(REPO / "jobs" / "sft.py", ["--optim", "adamw_torch"], offloaded)
    assert finding.note and "adamw_torch_fused" in finding.message
    assert preflight.check(REPO / "jobs" / "sft.py", ["--optim", "adamw_torch"], HERE) == []
    argv = [
        "--procs",
        "2",
        "--zero",
        "2",
        "--offload-optimizer",
        "cpu",
        "--dry-run",
        str(REPO / "jobs" / "sft.py"),
    ]
    done = ftlaunch(*argv, "--optim", "adamw_torch", cwd=tmp_path)
    assert done.returncode == 0 and "# note: " in done.stdout and "about 3x slower" in done.stdout
    assert '"optim": "adamw_torch_fused"' in done.stdout, "the trainer overrides carry ftlaunch's choice"


def test_a_recipe_that_cannot_be_read_here_gets_no_finding(tmp_path: Path) -> None:
    """(A resume from another folder, say: the launch's own checks name the missing recipe.)"""
    assert preflight.check(tmp_path / "gone.py", [], HERE) == []
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"\xff\xfe\x00")
    assert preflight.check(binary, [], HERE) == []
