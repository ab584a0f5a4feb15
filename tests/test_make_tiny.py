"""The tiny demo model: built in a clean process, validated on use, rebuilt when broken (issue 13).

Under ZeRO-3 a rank that built the model in-process saved every tensor empty, and that cached
folder broke every later launch. These tests build real models (a few seconds each on a CPU).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "jobs"))
import make_tiny  # jobs/ is a folder of scripts, not a package


def tensor_shapes(folder: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="numpy") as weights:
        return {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118


def write_empty_tensors(folder: Path) -> None:
    """Replace the weights with what a ZeRO-3 partitioned build saved: every tensor bf16, shape [0]."""
    import torch
    from safetensors.torch import save_file

    names = [*tensor_shapes(folder), "lm_head.weight"]
    empty = {name: torch.empty(0, dtype=torch.bfloat16) for name in dict.fromkeys(names)}
    save_file(empty, str(folder / "model.safetensors"), metadata={"format": "pt"})


def leftovers(folder: Path) -> list[str]:
    """Temporary or moved-aside folders a build left beside ``folder``."""
    return sorted(
        p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.") and p.is_dir()
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model built the way recipes build it (``build_tiny_model``, hence in a child process)."""
    return make_tiny.build_tiny_model(tmp_path_factory.mktemp("built") / "tiny")


@pytest.fixture
def cached(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built model, for a test to break."""
    return Path(shutil.copytree(built, tmp_path / "tiny"))


@pytest.fixture
def zero3_active(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """This process as a rank of a one-process ZeRO-3 run once the trainer config exists:
    transformers' ``is_deepspeed_zero3_enabled()`` is true and the rendezvous variables are set, so
    a model created here would be partitioned (the old in-process build saved it empty, as in the
    issue)."""
    from transformers.integrations.deepspeed import (
        HfDeepSpeedConfig,
        is_deepspeed_zero3_enabled,
        unset_hf_deepspeed_config,
    )

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {"RANK": 0, "LOCAL_RANK": 0, "WORLD_SIZE": 1, "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("MASTER_PORT", str(port))
    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    assert is_deepspeed_zero3_enabled()
    try:
        yield config
    finally:
        unset_hf_deepspeed_config()


def test_build_gives_a_model_that_loads_with_the_shapes_its_config_implies(built: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    assert make_tiny.find_problem(built) is None
    shapes = tensor_shapes(built)
    assert all(0 not in shape for shape in shapes.values())
    config = AutoConfig.from_pretrained(built)
    assert (config.hidden_size, config.num_hidden_layers) == (64, 2)
    model = AutoModelForCausalLM.from_pretrained(built)
    embeddings = model.get_input_embeddings().weight.detach()
    assert list(embeddings.shape) == [config.vocab_size, 64]
    assert float(embeddings.abs().sum()) > 0  # real weights, not zeros or an empty placeholder
    tokenizer = AutoTokenizer.from_pretrained(built)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "2 + 2?"}], add_generation_prompt=True)
    logits = model(input_ids=torch.tensor([ids["input_ids"]])).logits
    assert list(logits.shape) == [1, len(ids["input_ids"]), config.vocab_size]
    assert leftovers(built) == []


def test_a_build_is_a_noop_when_the_cache_is_valid(cached: Path) -> None:
    before = (cached / "model.safetensors").stat().st_mtime_ns
    assert make_tiny.build_tiny_model(cached) == cached.resolve()
    assert (cached / "model.safetensors").stat().st_mtime_ns == before


def test_empty_tensors_are_detected_and_rebuilt(cached: Path, capfd: pytest.CaptureFixture[str]) -> None:
    write_empty_tensors(cached)
    assert (cached / "model.safetensors").stat().st_size < 4096  # like the 2,424-byte file of issue 13
    problem = make_tiny.find_problem(cached)
    assert problem is not None and "empty tensors" in problem

    assert make_tiny.build_tiny_model(cached) == cached.resolve()

    assert make_tiny.find_problem(cached) is None
    assert all(0 not in shape for shape in tensor_shapes(cached).values())
    rebuilt = [line for line in capfd.readouterr().err.splitlines() if "rebuilt" in line]
    assert len(rebuilt) == 1 and str(cached.resolve()) in rebuilt[0] and "empty tensors" in rebuilt[0]
    assert leftovers(cached) == []


def test_a_missing_file_is_detected_and_rebuilt(cached: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (cached / "tokenizer.json").unlink()
    assert make_tiny.find_problem(cached) == "tokenizer.json is missing"

    make_tiny.build_tiny_model(cached)

    assert (cached / "tokenizer.json").is_file()
    assert make_tiny.find_problem(cached) is None
    assert "because tokenizer.json is missing" in capfd.readouterr().err


def test_a_wrong_shape_is_detected(cached: Path) -> None:
    import json

    config = json.loads((cached / "config.json").read_text())
    config["intermediate_size"] = 256  # config and weights no longer agree
    (cached / "config.json").write_text(json.dumps(config))
    problem = make_tiny.find_problem(cached)
    assert problem is not None and "mlp" in problem and "[256, 64]" in problem


def test_unreadable_weights_are_detected(cached: Path) -> None:
    (cached / "model.safetensors").write_bytes(b"not a safetensors file")
    problem = make_tiny.find_problem(cached)
    assert problem is not None and problem.startswith("model.safetensors cannot be read")


def test_a_folder_with_foreign_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    """``$FTLAUNCH_TINY_DIR`` pointed at a user's folder by mistake: never moved aside or deleted."""
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError) as refused:
        make_tiny.build_tiny_model(mine)
    message = str(refused.value)
    assert str(mine) in message and "left alone" in message and "FTLAUNCH_TINY_DIR" in message
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_the_build_works_while_zero3_is_active_in_the_caller(tmp_path: Path, zero3_active: Any) -> None:
    """The regression itself: the caller is under ZeRO-3 partitioned initialisation, the build is not."""
    folder = make_tiny.build_tiny_model(tmp_path / "tiny")
    assert make_tiny.find_problem(folder) is None
    assert all(0 not in shape for shape in tensor_shapes(folder).values())


def test_an_in_process_build_under_zero3_is_refused(zero3_active: Any) -> None:
    with pytest.raises(RuntimeError, match="ZeRO-3"):
        make_tiny.make_model(None)  # type: ignore[arg-type]  # refused before the tokenizer is read


def test_concurrent_builders_agree_on_one_valid_folder(tmp_path: Path) -> None:
    """Every rank on a machine starts a builder at once; the lock lets one build, the rest reuse it."""
    target = tmp_path / "cache" / "tiny"
    command = [sys.executable, str(REPO / "jobs" / "make_tiny.py"), str(target)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    results = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in results]
    assert [out.strip() for out, _ in results] == [str(target.resolve())] * 3
    assert make_tiny.find_problem(target) is None
    assert leftovers(target) == []


def test_the_builder_process_gets_no_distributed_settings() -> None:
    assert make_tiny.is_distributed_var("MASTER_PORT")
    assert make_tiny.is_distributed_var("ACCELERATE_USE_DEEPSPEED")
    assert not make_tiny.is_distributed_var("HF_HUB_OFFLINE")
    assert not make_tiny.is_distributed_var("FTLAUNCH_TINY_DIR")
