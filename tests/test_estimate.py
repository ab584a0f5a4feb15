"""``ftlaunch estimate`` and the arithmetic under it, held against the libraries' own numbers:
transformers' models built on the meta device (parameter counts, exact), peft (LoRA's trainable
parameters, exact), DeepSpeed's estimators (ZeRO-2/3 model states, exact) and accelerate's
``estimate-memory`` (plain training, within its stated conventions). No hub, no weights, no mocks.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.cli import main
from launcher.sizing import estimate
from launcher.sizing.estimate import Option, Workload, model_from_config
from launcher.sizing.text import parse_size

# Shapes of real models (their config.json's architecture fields), small enough to build on meta.
QWEN2_05B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}
LLAMA_1B = {
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
}
LLAMA_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2-0.5b": QWEN2_05B,
    "llama-1b": LLAMA_1B,
    "llama-7b": LLAMA_7B,
    "llama-biases": {**LLAMA_1B, "num_hidden_layers": 2, "attention_bias": True, "mlp_bias": True},
    "mistral-7b": {**LLAMA_7B, "model_type": "mistral", "intermediate_size": 14336, "num_key_value_heads": 8},
    "qwen3-0.6b-no-head-dim": {
        **QWEN2_05B,
        "model_type": "qwen3",
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
    },
    "gemma2-2b": {
        "model_type": "gemma2",
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 256000,
    },
    "gemma3-1b": {
        "model_type": "gemma3_text",
        "hidden_size": 1152,
        "intermediate_size": 6912,
        "num_hidden_layers": 26,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "vocab_size": 262144,
    },
    "phi3-mini": {
        **LLAMA_7B,
        "model_type": "phi3",
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "vocab_size": 32064,
    },
    "olmo2-1b": {k: v for k, v in LLAMA_1B.items() if k != "head_dim"} | {"model_type": "olmo2"},
    "granite-2b": {**LLAMA_1B, "model_type": "granite", "num_hidden_layers": 40, "vocab_size": 49155},
}


def meta_model(config: dict[str, Any]) -> Any:
    """transformers' own model, on the meta device: shapes without memory. ``torch.device("meta")``
    rather than accelerate's ``init_empty_weights``, which (transformers 5) leaves tied weights untied."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, Any]]:
    yield {name: meta_model(config) for name, config in CONFIGS.items()}


def counted(config: dict[str, Any]) -> estimate.Model:
    model, why = model_from_config(config)
    assert model is not None, why
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_counts_equal_transformers(name: str, built: dict[str, Any]) -> None:
    """Total, largest single module (what DeepSpeed's ZeRO-3 estimator calls the largest layer) and
    the weights bitsandbytes quantizes (every ``nn.Linear`` but the output head), exactly."""
    import torch

    model, mine = built[name], counted(CONFIGS[name])
    assert mine.total == sum(p.numel() for p in model.parameters())
    assert mine.largest_layer == max(
        sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()
    )
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    assert mine.quantized == sum(m.weight.numel() for m in linears)


@pytest.mark.parametrize("name", ["qwen2-0.5b", "llama-1b", "phi3-mini", "gemma2-2b"])
def test_lora_parameters_equal_peft(name: str) -> None:
    """peft's ``all-linear`` LoRA (every linear layer but the output head) at rank 16, exactly."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(meta_model(CONFIGS[name]), LoraConfig(r=16, target_modules="all-linear"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert counted(CONFIGS[name]).lora_params(16) == trainable


def model_states(work: Workload, option: Option) -> float:
    est = estimate.estimate(work, option)
    return est.model_states


TOPOLOGIES = [(1, 1), (8, 1), (4, 1), (8, 4)]  # (GPUs per node, nodes)


@pytest.mark.parametrize(("per_node", "nodes"), TOPOLOGIES)
@pytest.mark.parametrize("name", ["qwen2-0.5b", "llama-1b", "llama-7b"])
def test_zero2_model_states_equal_deepspeeds_estimator(name: str, per_node: int, nodes: int) -> None:
    """``estimate_zero2_model_states_mem_needs``: GPU bytes exactly (to DeepSpeed's int rounding).
    CPU bytes with optimizer offload agree where DeepSpeed's ``max(4 x GPUs, 16)`` is 16 (up to 4
    GPUs in all); its ``4 x GPUs`` term is the fp32 model every process loads into RAM without
    ``zero.Init`` (a start-up peak), which ftlaunch's CPU column (offloaded state only) leaves out."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    model = counted(CONFIGS[name])
    work = Workload(model, nodes=nodes, per_node=per_node)
    for offload in (False, True):
        cpu, gpu = estimate_zero2_model_states_mem_needs(model.total, per_node, nodes, cpu_offload=offload)
        mine = estimate.estimate(work, Option(2, offload_optimizer=offload))
        assert abs(mine.model_states - gpu) <= 1
        if offload and per_node * nodes <= 4:
            assert mine.cpu_offload == pytest.approx(cpu, abs=2)


@pytest.mark.parametrize(("per_node", "nodes"), TOPOLOGIES)
@pytest.mark.parametrize("name", ["qwen2-0.5b", "llama-1b", "llama-7b"])
def test_zero3_model_states_equal_deepspeeds_estimator(name: str, per_node: int, nodes: int) -> None:
    """``estimate_zero3_model_states_mem_needs`` with ``zero_init=True`` (accelerate's
    ``zero3_init_flag``, which ftlaunch sets for ZeRO-3): GPU and CPU bytes, every offload."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    model = counted(CONFIGS[name])
    work = Workload(model, nodes=nodes, per_node=per_node)
    for opt, params in ((False, False), (True, False), (True, True)):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            model.total, model.largest_layer, per_node, nodes, opt, params, zero_init=True
        )
        mine = estimate.estimate(work, Option(3, opt, params))
        assert abs(mine.model_states - gpu) <= 1
        if opt:
            assert mine.cpu_offload == pytest.approx(cpu, abs=2)


def test_deepspeeds_live_estimators_cannot_count_a_meta_model(built: dict[str, Any]) -> None:
    """Why the tests call DeepSpeed's *cold* estimators with counted parameters: the ``_all_live``
    ones deduplicate parameters by ``data_ptr()``, which is 0 for every meta tensor, so the total
    collapses to one tensor; the largest layer (a per-module sum) is still right."""
    from deepspeed.runtime.zero.stage3 import model_to_params

    total, largest = model_to_params(built["llama-1b"])
    assert total < counted(LLAMA_1B).total / 1000
    assert largest == counted(LLAMA_1B).largest_layer


def test_plain_training_agrees_with_accelerates_estimate_memory() -> None:
    """accelerate's ``estimate-memory`` logic (``create_empty_model`` is hub-only, so its body is
    replayed here: ``init_empty_weights`` + ``from_config`` in fp32, then ``calculate_maximum_sizes``
    and ``estimate_training_usage``). In fp32 its model + gradients + Adam is 16 bytes per parameter,
    ftlaunch's one-process ZeRO-0 in fp32 too: equal up to the non-persistent buffers accelerate
    counts (rotary ``inv_freq``), tolerance 0.01%. For bf16 accelerate adds half an fp32 copy for
    the 16-bit gradient GEMMs (18 bytes per parameter); ftlaunch, the model loaded in fp32 (TRL's
    default) under autocast, counts 16: within 12.5%, never above. Two more differences, asserted
    so a change in accelerate shows: under ``init_empty_weights`` transformers 5 leaves tied
    embeddings untied (the model is counted with ``tie_weights()`` called), and accelerate has no
    notion of ZeRO or activations."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**QWEN2_05B), dtype=torch.float32)
    untied = sum(p.numel() for p in model.parameters())
    assert untied == counted(QWEN2_05B).total + QWEN2_05B["vocab_size"] * QWEN2_05B["hidden_size"]
    model.tie_weights()
    total_bytes, _ = calculate_maximum_sizes(model)
    mine = Workload(counted(QWEN2_05B), dtype="float32")
    ddp = estimate.estimate(mine, Option(0)).model_states
    fp32 = estimate_training_usage(total_bytes, "float32")
    assert ddp == pytest.approx(fp32["model"] + fp32["gradients"] + fp32["optimizer"], rel=1e-4)
    bf16 = estimate_training_usage(total_bytes, "bfloat16")
    accelerate_bf16 = bf16["model"] + bf16["gradients"] + bf16["optimizer"]
    assert accelerate_bf16 * (1 - 0.125) <= ddp * (1 + 1e-4) and ddp <= accelerate_bf16


def test_activations_by_the_stated_formula() -> None:
    """Hand-checked: Llama-7B shape, seq 2048, micro 1, bf16. Without checkpointing
    34 x 2048 x 4096 x 32 = 9,126,805,504 bytes of layers plus 2048 x 32000 x 10 = 655,360,000 of
    logits; with it 2 x 2048 x 4096 x 32 + 34 x 2048 x 4096 = 822,083,584 plus the same logits."""
    work = Workload(counted(LLAMA_7B), seq_len=2048, micro=1)
    assert estimate.activations(work) == 9_126_805_504 + 655_360_000
    ckpt = Workload(counted(LLAMA_7B), seq_len=2048, micro=1, checkpointing=True)
    assert estimate.activations(ckpt) == 822_083_584 + 655_360_000


def test_hand_checked_anchor_7b_full_on_one_80gb_gpu() -> None:
    """Llama-7B shape (6,738,415,616 parameters), full, bf16, 1 GPU: ZeRO-2 with optimizer offload
    keeps only the 16-bit weights, 2 x 6.74e9 = 13.48 GB, which DeepSpeed's own estimator says too."""
    work = Workload(counted(LLAMA_7B))
    est = estimate.estimate(work, Option(2, offload_optimizer=True))
    assert est.params == 2 * 6_738_415_616 and est.grads == est.optimizer == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("80GB", 80 * 10**9),
        ("80 GiB", 80 * 2**30),
        ("80G", 80 * 2**30),
        ("81920MiB", 81920 * 2**20),
        ("24000MB", 24 * 10**9),
        ("1.5TB", 15 * 10**11),
        ("80", None),
        ("eighty GB", None),
        ("-4GB", None),
        ("80XB", None),
    ],
)
def test_sizes_as_people_write_them(text: str, expected: int | None) -> None:
    assert parse_size(text) == expected


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_estimate_command_prints_every_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_config(tmp_path / "llama 7b", LLAMA_7B)
    assert main(["estimate", "--model", str(folder), "--gpus", "8", "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    for option in estimate.OPTIONS:
        assert f"\n{option.label()} " in out
    assert "6.74B parameters (from config.json)" in out
    assert "fits: total/GPU within 67.1 GiB usable (90% of 74.5 GiB, --gpu-memory 80GB)" in out
    assert "--zero auto would pick: ZeRO-1" in out
    assert "approximate" in out


def test_estimate_of_a_config_file_with_lora(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "q", QWEN2_05B) / "config.json"
    argv = ["estimate", "--model", str(path), "--method", "lora", "--gpu-memory", "24GB"]
    assert main([*argv, "--gradient-checkpointing", "--seq-len", "4096"]) == 0
    out = capsys.readouterr().out
    assert "LoRA r=16 (8.8M trainable of 494.0M)" in out and "seq 4096" in out
    assert "--zero auto would pick: ZeRO-0 (DDP)" in out


def test_estimate_finds_a_hub_id_in_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B"
    write_config(repo / "snapshots" / "abc123", QWEN2_05B)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["estimate", "--model", "Qwen/Qwen2.5-0.5B", "--gpu-memory", "24GB"]) == 0
    assert "snapshots/abc123/config.json (qwen2): 494.0M" in capsys.readouterr().out


def test_a_model_that_cannot_be_read_is_exit_2_naming_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--gpu-memory", "80Gb"]) == 2
    err = capsys.readouterr().err
    assert (
        "--model meta-llama/Llama-3.1-8B: not a local folder or file, and no copy in the Hugging Face" in err
    )
    assert "give --model with a local model folder or its config.json" in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["estimate", "--model", str(tmp_path / "bad.json"), "--gpu-memory", "80 GB"]) == 2
    assert "cannot be read as JSON" in capsys.readouterr().err
    assert (
        main(["estimate", "--model", str(tmp_path / "bad.json"), "--gpu-memory", "lots", "--gpus", "0"]) == 2
    )
    err = capsys.readouterr().err
    assert "--gpu-memory lots: not a size" in err and "--gpus 0: must be a positive integer" in err


def test_an_unknown_architecture_is_counted_by_transformers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A layout the arithmetic does not know (a mixture of experts) is built on the meta device."""
    mixtral = {**LLAMA_1B, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}
    mixtral.pop("head_dim")
    folder = write_config(tmp_path / "moe", {**mixtral, "num_hidden_layers": 2})
    assert main(["estimate", "--model", str(folder), "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    total = sum(p.numel() for p in meta_model({**mixtral, "num_hidden_layers": 2}).parameters())
    assert f"{total / 1e6:.1f}M parameters (by transformers on the meta device)" in out


def test_gpu_memory_comes_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.machine.hardware import probe

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, GPU-a, H100, 9.0, 81559 MiB\\n1, GPU-b, A100, 8.0, 40960 MiB\\n'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert probe().gpu_memory == (81559 * 2**20, 40960 * 2**20)
