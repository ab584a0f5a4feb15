"""Bad input: one clear, one-screen error naming the value and the fix, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.cli import main
from launcher.machine.hardware import Hardware, hardware_problems
from launcher.rules.validate import validate
from launcher.spec.launchspec import LaunchSpec, Topology

# (argv, job YAML text or None, fragments the error must contain)
CASES = [
    (["--zero", "4", "recipe.py"], None, ["--zero 4", "1, 2 and 3"]),
    (["--zero", "two", "recipe.py"], None, ["--zero", "'two'", "integer"]),
    (
        ["--zero", "1", "--offload-optimizer", "cpu", "recipe.py"],
        None,
        ["--offload-optimizer cpu", "--zero 2"],
    ),
    (["--zero", "2", "--offload-params", "cpu", "recipe.py"], None, ["--offload-params cpu", "--zero 3"]),
    (["--zero", "2", "--offload-optimizer", "disk", "recipe.py"], None, ["'disk'", "none, cpu, nvme"]),
    (["--zero", "3", "--offload-params", "nvme", "--gpus", "8", "recipe.py"], None, ["--nvme-path"]),
    (["--zero", "2", "--nvme-path", "/x", "recipe.py"], None, ["--nvme-path /x", "no effect"]),
    (
        ["--procs", "2", "--zero", "2", "--offload-optimizer", "nvme", "--nvme-path", "/x", "recipe.py"],
        None,
        ["nvme offload needs GPUs", "--offload-optimizer cpu"],
    ),
    (
        ["--gpus", "8", "--global-batch", "100", "--micro-batch", "2", "recipe.py"],
        None,
        ["--global-batch 100", "16", "--global-batch 96 or --global-batch 112"],
    ),
    (
        ["--gpus", "8", "--global-batch", "10", "recipe.py"],
        None,
        ["--global-batch 10", "world size 8", "8 or"],
    ),
    (
        ["--gpus", "2", "--micro-batch", "2", "--grad-accum", "2", "--global-batch", "9", "recipe.py"],
        None,
        ["--global-batch 9", "= 8", "only two"],
    ),
    (["--gpus", "0", "recipe.py"], None, ["--gpus 0", "--procs"]),
    (["--gpus", "2", "--procs", "2", "recipe.py"], None, ["--gpus 2 and --procs 2 conflict"]),
    (["--procs", "2", "--precision", "fp16", "recipe.py"], None, ["--precision fp16", "bf16 or fp32"]),
    (["--precision", "fp8", "recipe.py"], None, ["'fp8'", "bf16, fp16, fp32"]),
    (["--micro-batch", "0", "recipe.py"], None, ["--micro-batch 0", "positive"]),
    (["--max-grad-norm", "-1", "recipe.py"], None, ["--max-grad-norm -1", ">= 0"]),
    (["--max-grad-norm", "big", "recipe.py"], None, ["'big'", "a number"]),
    (["--gpus", "2", "missing.py"], None, ["missing.py", "no such file"]),
    (["--partition", "gpu", "--time", "1:00:00", "recipe.py"], None, ["--partition, --time", "add --slurm"]),
    (["--slurm", "--time", "tomorrow", "recipe.py"], None, ["--time tomorrow", "HH:MM:SS"]),
    (["--slurm", "--sbatch", "mail-type", "recipe.py"], None, ["--sbatch mail-type", "KEY=VALUE"]),
    (["--slurm", "--cpus-per-task", "0", "recipe.py"], None, ["--cpus-per-task 0", "at least 1"]),
    (["--job", "job.yaml"], "slurm: {exclusive: maybe}\n", ["'slurm.exclusive'", "true or false"]),
    (["--job", "job.yaml"], "slurm: {partiton: gpu}\n", ["unknown key 'slurm.partiton'", "partition"]),
    (["--gpus", "2"], None, ["no recipe given"]),
    (["--job", "job.yaml"], "topology:\n  gpu: 8\n", ["unknown key 'topology.gpu'", "gpus", "procs"]),
    (["--job", "job.yaml"], "zero_stage: 2\n", ["unknown key 'zero_stage'", "zero"]),
    (["--job", "job.yaml"], "zero: {stage: 2\n", ["not valid YAML"]),
    (["--job", "job.yaml"], "zero: 2\n", ["'zero' must be a mapping"]),
    (["--job", "nope.yaml"], None, ["--job nope.yaml", "no such file"]),
    (["--job", "job.yaml"], "batch: {micro: 2.5}\n", ["'batch.micro'", "2.5", "integer"]),
    (["--job", "job.yaml"], "topology: {nodes: null}\n", ["'topology.nodes'", "needs a value"]),
    (
        ["--gpus", "2", "--zero", "3", "recipe.py", "--load_in_4bit"],
        None,
        ["QLoRA", "--bnb_4bit_quant_storage bfloat16", "--zero 2"],
    ),
    (
        [
            "--gpus",
            "2",
            "--zero",
            "3",
            "--precision",
            "fp16",
            "recipe.py",
            "--load_in_4bit",
            "True",
            "--bnb_4bit_quant_storage",
            "bfloat16",
        ],
        None,
        ["--bnb_4bit_quant_storage float32", "got bfloat16"],
    ),
    (
        ["--gpus", "8", "--micro-batch", "1", "--grad-accum", "2", "recipe.py", "--num_generations", "6"],
        None,
        ["generation batch", "= 16", "--num_generations 6"],
    ),
    (["configs", "--zero", "5"], None, ["--zero 5"]),
    (["configs", "--zero", "2", "--write"], None, ["--write needs --out"]),
]


@pytest.mark.parametrize(("argv", "job", "fragments"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_refused_clearly(
    argv: list[str], job: str | None, fragments: list[str], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if job is not None:
        (in_tmp / "job.yaml").write_text(job)
    before = sorted(p.name for p in in_tmp.rglob("*"))
    dry = argv and argv[0] != "configs" and "--job" not in argv
    code = main(["--dry-run", *argv] if dry else argv)
    err = capsys.readouterr().err
    assert code == 2
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} missing from:\n{err}"
    assert err.startswith("ftlaunch: ")
    assert len(err.splitlines()) <= 20 and max(len(line) for line in err.splitlines()) < 240
    assert sorted(p.name for p in in_tmp.rglob("*")) == before, "a refused launch must write nothing"


def test_all_problems_are_reported_at_once(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["--zero", "1", "--offload-optimizer", "cpu", "--micro-batch", "0", "--gpus", "0", "recipe.py"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "3 problems" in err
    assert "--offload-optimizer" in err and "--micro-batch 0" in err and "--gpus 0" in err


def test_real_launch_is_refused_without_the_gpus_it_asks_for(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--gpus", "2", "--zero", "2", "recipe.py"])
    err = capsys.readouterr().err
    assert code == 2 and "--gpus 2" in err and "--procs" in err
    assert not (in_tmp / "runs").exists()


def test_bf16_on_a_pre_ampere_gpu_is_refused() -> None:
    spec = validate(LaunchSpec(topology=Topology(gpus=2), precision="bf16")).spec
    problems = hardware_problems(spec, Hardware(("Tesla V100", "Tesla V100"), (7.0, 7.0)))
    assert len(problems) == 1 and "Tesla V100" in problems[0] and "--precision fp16" in problems[0]
    assert hardware_problems(spec, Hardware(("H100",) * 2, (9.0, 9.0))) == []
    too_many = hardware_problems(
        validate(LaunchSpec(topology=Topology(gpus=8))).spec, Hardware(("H100",), (9.0,))
    )
    assert too_many and "--gpus 1" in too_many[0]


def test_wait_without_slurm_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--procs", "1", "--wait", "recipe.py"]) == 2
    assert "--wait only applies to --slurm" in capsys.readouterr().err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("command", [["status", "nope"], ["logs", "nope"], ["cancel", "nope"]])
def test_job_control_names_an_unknown_run(
    command: list[str], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftlaunch: no run 'nope'") and "ftlaunch status" in err


def test_multi_node_local_launch_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "2", "--procs", "1", "recipe.py"]) == 2
    assert "--nodes 2" in capsys.readouterr().err
