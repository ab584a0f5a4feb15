"""``--zero auto``: the lowest stage, then the least offload, whose estimate fits the memory with
10% headroom, decided once by the rules (pure: the facts come in as a ``Sizing`` value) and read
by everything downstream from ``Resolved``; shown by the dry run and recorded in ``decided.json``."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from launcher.cli import main
from launcher.errors import SpecError
from launcher.rules.resume import resume_spec
from launcher.rules.validate import validate
from launcher.sizing import estimate
from launcher.sizing.estimate import Budget, Option, Workload
from launcher.sizing.zeroauto import Sizing
from launcher.spec.decided import Resolved
from launcher.spec.jobfile import load as load_job
from launcher.spec.launchspec import LaunchSpec, Topology, Zero, from_mapping, to_dict
from tests.test_cli import heavy_modules_after
from tests.test_estimate import LLAMA_7B, QWEN2_05B

LLAMA_70B = {
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}
MODELS = {"0.5B": QWEN2_05B, "7B": LLAMA_7B, "70B": LLAMA_70B}
GB = 10**9
# What the recipe says, so the workload is known: micro 1, 2048 tokens, TRL's default checkpointing.
SHAPE = ("--per_device_train_batch_size", "1", "--max_length", "2048")
METHOD_ARGS = {
    "full": (),
    "lora": ("--use_peft",),
    "qlora": ("--use_peft", "--load_in_4bit", "--bnb_4bit_quant_storage", "bfloat16"),
}


def auto_spec(method: str, gpus: int, **zero: Any) -> LaunchSpec:
    return LaunchSpec(
        recipe="recipe.py",
        args=(*SHAPE, *METHOD_ARGS[method]),
        topology=Topology(gpus=gpus),
        zero=Zero(stage="auto", **zero),
    )


def sizing(config: dict[str, Any], memory: int, ram: int | None = None) -> Sizing:
    return Sizing(config, "--model test", memory, "--gpu-memory test", ram, "test RAM" if ram else "")


def workload(config: dict[str, Any], method: str, gpus: int) -> Workload:
    model, _ = estimate.model_from_config(config)
    assert model is not None
    kind = typing.cast(estimate.Method, method)
    return Workload(model, method=kind, seq_len=2048, micro=1, checkpointing=True, per_node=gpus)


def decided_option(resolved: Resolved) -> Option:
    z = resolved.spec.zero
    assert isinstance(z.stage, int)
    return Option(z.stage, z.offload_optimizer != "none", z.offload_params != "none")


@pytest.mark.parametrize("gpus", [1, 8])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
@pytest.mark.parametrize("memory", [24 * GB, 40 * GB, 80 * GB], ids=["24GB", "40GB", "80GB"])
@pytest.mark.parametrize("size", sorted(MODELS))
def test_the_lowest_option_that_fits_is_chosen(size: str, memory: int, method: str, gpus: int) -> None:
    """Over the grid: the decided option fits by the estimate, and every option ahead of it in
    the order of preference (stage, then offload) does not; when none fits, the launch is refused."""
    config = MODELS[size]
    work, budget = workload(config, method, gpus), Budget(memory, "test")
    verdicts = {e.option: budget.verdict(e, work) for e in estimate.estimates(work)}
    try:
        resolved = validate(auto_spec(method, gpus), sizing(config, memory))
    except SpecError as err:
        assert "nothing fits" in str(err) and all(v != "yes" for v in verdicts.values())
        return
    chosen = decided_option(resolved)
    assert verdicts[chosen] == "yes"
    earlier = estimate.OPTIONS[: estimate.OPTIONS.index(chosen)]
    assert all(verdicts[o] != "yes" for o in earlier), f"{chosen.label()} chosen over a cheaper fit"
    assert resolved.zero_auto is not None and resolved.zero_auto.stage == chosen.stage
    assert resolved.zero_auto.estimate_bytes == int(estimate.estimate(work, chosen).total)


@pytest.mark.parametrize(
    ("size", "method", "gpus", "memory", "expected"),
    [
        # 0.49B LoRA on one 24 GB GPU: DDP holds the fp32 base (2.0 GB), fp32 adapters and Adam
        # (8.8M x 16 B = 0.14 GB), activations (~3.3 GB, the 152k-token vocabulary's logits
        # dominate) and 2 GiB: ~7.4 GB of 21.6 usable.
        ("0.5B", "lora", 1, 24 * GB, Option(0)),
        # 6.74B full on 8 x 80 GB: DDP needs 20 B/param (fp32 weights, gradients twice, Adam) =
        # 135 GB; ZeRO-1: 4 B/param (16-bit weights + gradients) = 27.0 GB + 16/8 B/param = 13.5 GB
        # + ~1.5 GB activations + 2.1 GB = 44 GB of 72 usable.
        ("7B", "full", 8, 80 * GB, Option(1)),
        # On one 80 GB GPU: ZeRO-1 and ZeRO-2 need 20 B/param = 135 GB; ZeRO-2 with the optimizer
        # on the CPU keeps 2 B/param = 13.5 GB (+ activations, overhead).
        ("7B", "full", 1, 80 * GB, Option(2, offload_optimizer=True)),
        # 70.6B full on 8 x 80 GB: ZeRO-3 needs 18 B/param / 8 = 159 GB; with the optimizer
        # offloaded 2 B/param / 8 = 17.6 GB + 4 x 1.05B (largest layer: the embedding) = 4.2 GB.
        ("70B", "full", 8, 80 * GB, Option(3, offload_optimizer=True)),
    ],
)
def test_hand_checked_anchors(size: str, method: str, gpus: int, memory: int, expected: Option) -> None:
    resolved = validate(auto_spec(method, gpus), sizing(MODELS[size], memory))
    assert decided_option(resolved) == expected


def test_offload_needs_the_ram_to_hold_it() -> None:
    """6.74B full on one 24 GB GPU: only offload fits the GPU, and optimizer offload puts
    16 B/param x 1.5 = 151 GiB in RAM (parameter offload 18 x 1.5 = 169 GiB): chosen with 256 GiB
    of RAM, refused with 64 GiB."""
    spec = auto_spec("full", 1)
    resolved = validate(spec, sizing(LLAMA_7B, 24 * GB, ram=256 * 2**30))
    assert decided_option(resolved) == Option(2, offload_optimizer=True)
    assert resolved.zero_auto is not None and "GiB of RAM per node of" in resolved.zero_auto.reason[0]
    with pytest.raises(SpecError, match=r"nothing fits.*offloads 169\.4 GiB of RAM per node"):
        validate(spec, sizing(LLAMA_7B, 24 * GB, ram=64 * 2**30))


def test_an_offload_the_user_set_is_kept() -> None:
    resolved = validate(auto_spec("full", 1, offload_optimizer="cpu"), sizing(QWEN2_05B, 80 * GB))
    assert decided_option(resolved) == Option(2, offload_optimizer=True)
    resolved = validate(auto_spec("full", 1, offload_params="cpu"), sizing(QWEN2_05B, 80 * GB))
    assert decided_option(resolved) == Option(3, offload_params=True)


def test_qlora_under_a_decided_zero3_still_needs_its_storage_dtype() -> None:
    spec = dataclasses.replace(auto_spec("qlora", 8), args=(*SHAPE, "--use_peft", "--load_in_4bit"))
    with pytest.raises(SpecError, match=r"ZeRO-3 \(what --zero auto chose\) needs .*bnb_4bit_quant_storage"):
        validate(spec, sizing(LLAMA_70B, 24 * GB))


def test_cpu_processes_share_the_ram_and_never_offload() -> None:
    """On ``--procs`` the rule is the same, against the node's RAM divided among its processes,
    over the stages only; with the RAM unknown (SLURM without --mem), plain DDP, said so."""
    spec = LaunchSpec(recipe="r.py", args=SHAPE, topology=Topology(procs=2), zero=Zero(stage="auto"))
    assert validate(spec, sizing(QWEN2_05B, 64 * 2**30)).spec.zero.stage == 0
    small = validate(spec, sizing(QWEN2_05B, 24 * 2**30))
    work = dataclasses.replace(workload(QWEN2_05B, "full", 2), on_cpu=True)
    chosen = decided_option(small)
    assert chosen.stage > 0 and not chosen.offload_optimizer
    usable = 24 * 2**30 * 0.9 / 2
    assert estimate.estimate(work, chosen).total <= usable < estimate.estimate(work, Option(0)).total
    unknown = validate(spec, Sizing(QWEN2_05B, "--model test"))
    assert unknown.spec.zero.stage == 0 and unknown.zero_auto is not None
    assert "RAM is not known" in unknown.zero_auto.reason[0]


def test_auto_in_a_job_file_and_spec_json_round_trip(in_tmp: Path) -> None:
    (in_tmp / "job.yaml").write_text("recipe: recipe.py\nzero:\n  stage: auto\nmodel: m\ngpu_memory: 80GB\n")
    spec = load_job("job.yaml")
    assert spec.zero.stage == "auto" and spec.model == "m" and spec.gpu_memory == "80GB"
    assert from_mapping(json.loads(json.dumps(to_dict(spec))), "spec.json") == spec


def test_decided_json_records_the_choice_and_reads_back() -> None:
    resolved = validate(auto_spec("full", 8), sizing(LLAMA_7B, 80 * GB))
    data = json.loads(json.dumps(resolved.to_dict()))
    assert data["spec"]["zero"]["stage"] == 1 and data["zero_auto"]["stage"] == 1
    assert data["zero_auto"]["reason"][0].startswith("ZeRO-1: ")
    assert Resolved.from_dict(data, "decided.json") == resolved
    plain = validate(LaunchSpec(recipe="r.py", zero=Zero(stage=2)))
    assert "zero_auto" not in plain.to_dict()


def test_a_resume_keeps_the_checkpoints_stage() -> None:
    spec, _, problems = resume_spec(auto_spec("full", 8), {"zero_stage": 3})
    assert problems == [] and spec.zero.stage == 3


def model_folder(root: Path, config: dict[str, Any]) -> Path:
    folder = root / "model dir"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_dry_run_shows_why(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = model_folder(in_tmp, LLAMA_7B)
    argv = ["--gpus", "8", "--zero", "auto", "--gpu-memory", "80GB", "--dry-run", "recipe.py"]
    assert main([*argv, "--model_name_or_path", str(folder), *SHAPE]) == 0
    out = capsys.readouterr().out
    assert "zero stage: 1 (chosen by --zero auto), world size: 8" in out
    assert "# zero auto: ZeRO-1: 41.0 GiB estimated per GPU, 67.1 GiB usable (90% of 74.5 GiB, " in out
    assert "needing more: ZeRO-0 (DDP) 128.9 GiB" in out
    assert (
        "# zero auto: estimated (approximately; ftlaunch estimate shows the parts) for: llama, 6.74B " in out
    )
    assert '"zero_auto": {' in out and '"stage": 1,' in out and '"stage": "auto"' not in out


def test_dry_run_with_auto_imports_nothing_heavy(in_tmp: Path) -> None:
    folder = model_folder(in_tmp, QWEN2_05B)
    argv = ["--gpus", "2", "--zero", "auto", "--gpu-memory", "40GB", "--dry-run", "recipe.py"]
    assert heavy_modules_after([*argv, "--model_name_or_path", str(folder)], in_tmp) == (0, [])
    on_cpu = ["--procs", "2", "--zero", "auto", "--model", str(folder), "--dry-run", "recipe.py"]
    on_cpu += ["--use_peft", "--max_length", "256", "--per_device_train_batch_size", "1"]  # fits in RAM
    assert heavy_modules_after(on_cpu, in_tmp) == (0, [])


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (
            ["--gpus", "1", "--zero", "auto", "--gpu-memory", "80GB", "recipe.py"],
            ["--zero auto needs the model to size: give --model PATH"],
        ),
        (
            [
                "--gpus",
                "1",
                "--zero",
                "auto",
                "--gpu-memory",
                "80GB",
                "recipe.py",
                "--model_name_or_path",
                "org/m",
            ],
            [
                "the recipe's --model_name_or_path org/m: not a local folder or file",
                "give --model with a local",
            ],
        ),
        (
            ["--zero", "auto", "--model", "./nowhere/config.json", "--gpu-memory", "80GB", "recipe.py"],
            ["--model ./nowhere/config.json: no such file or folder", "give --model"],
        ),
        (
            ["--slurm", "--gpus", "8", "--zero", "auto", "--model", "MODEL", "recipe.py"],
            ["--zero auto with --slurm needs --gpu-memory SIZE"],
        ),
        (["--gpus", "1", "--gpu-memory", "80", "recipe.py"], ["--gpu-memory 80: not a size; give a unit"]),
        (["--procs", "1", "--gpu-memory", "80GB", "recipe.py"], ["--gpu-memory 80GB has no effect on CPU"]),
        (["configs", "--zero", "auto"], ["--zero auto is decided by a launch", "ftlaunch estimate"]),
        (
            ["--zero", "auto", "--model", "UNKNOWN", "--gpu-memory", "80GB", "recipe.py"],
            ["'mixtral' is not a layout ftlaunch counts", "give --zero 0, 1, 2 or 3"],
        ),
    ],
)
def test_refusals_name_the_flag(
    argv: list[str],
    fragments: list[str],
    in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(in_tmp / "no cache"))
    model_folder(in_tmp, QWEN2_05B).rename(in_tmp / "MODEL")
    model_folder(in_tmp, {**LLAMA_7B, "model_type": "mixtral"}).rename(in_tmp / "UNKNOWN")
    assert main(argv) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err
