"""Helpers shared by the parsed recipes (``sft.py``, ``dpo.py``, ``grpo.py``).

The recipes differ in their trainer, data and a few flags, but load models, tokenizers and data,
pick ``--use_cpu`` and resolve ``--resume_from_checkpoint last`` the same way; keeping that here
means a fix (a new placement rule for bitsandbytes, a new data file type) lands in all three at
once. Like the recipes, this module imports nothing from ftlaunch, so ``jobs/`` still runs under
plain ``python`` or ``accelerate launch``: each recipe imports it as ``from recipe_utils import ...``,
which works because Python puts a script's own folder first on ``sys.path`` (and ftlaunch's entry
does the same for the recipe it runs). Copy this file along with a recipe that is moved elsewhere.

Only the standard library is imported at module level: torch, transformers, datasets and TRL's
loaders are imported inside the functions that need them, so a recipe can still parse (and reject)
its flags before anything heavy is loaded.
"""

from __future__ import annotations

import sys
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import TrainingArguments
    from trl import ModelConfig, ScriptArguments

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
# Local data files by suffix -> the `datasets` builder that reads them; anything else is a folder or
# a hub name for `load_dataset` itself.
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# `--model_name_or_path` values that mean the locally built tiny model (the same as make_tiny's).
TINY_ALIASES = (None, "", "tiny")
# `--resume_from_checkpoint` values that mean "the newest checkpoint in the output folder, if any".
RESUME_LATEST = ("true", "last", "latest")


def dataset_name_field(default: Path) -> Any:
    """The ``--dataset_name`` field of a recipe's ``ScriptArguments`` subclass: TRL's has no default,
    the recipes default to their shipped file so that a bare ``python jobs/X.py`` trains. One
    definition keeps the flag's help text the same in every recipe."""
    return field(
        default=str(default),
        metadata={"help": "A .json/.jsonl/.csv/.parquet file, a dataset folder or a hub dataset name."},
    )


def no_accelerator() -> bool:
    """TRL defaults to ``bf16=True``, which transformers refuses on a machine without an accelerator
    unless ``use_cpu`` is set ("Your setup doesn't support bf16/gpu. You need to assign use_cpu if
    you want to train the model on CPU."); so on such a machine ``--use_cpu`` becomes the default."""
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, ROCm, XPU, MPS, ...
    return not (accelerator.is_available() if accelerator is not None else torch.cuda.is_available())


# ---------------------------------------------------------------- model


def resolve_model_name(name: str | None) -> str:
    """``tiny`` or nothing means the locally built tiny model; ``make_tiny`` is imported only then, so
    a recipe copied somewhere else (with this module) also runs when given a real model."""
    if name not in TINY_ALIASES:
        return str(name)
    sys.path.insert(0, str(HERE))
    from make_tiny import resolve_model_name as tiny

    return tiny(name)


def device_map_for(quantized: bool, args: TrainingArguments) -> Any:
    """bitsandbytes needs an explicit placement: this rank's GPU, or the CPU when there is none.
    Unquantized models (and ZeRO-3, which partitions while loading) are placed by the trainer.
    ``args`` is any trainer config (``SFTConfig``, ``DPOConfig``, ``GRPOConfig``): only
    ``use_cpu`` is read."""
    import torch
    from accelerate import PartialState
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not quantized or is_deepspeed_zero3_enabled():
        return None
    if args.use_cpu or not torch.cuda.is_available():
        return "cpu"
    return {"": PartialState().local_process_index}


def load_model(name: str, model_args: ModelConfig, args: TrainingArguments) -> Any:
    """The causal LM, loaded by the recipe rather than by the trainer from a name, so that the
    ``--load_in_4bit`` quantization config and its placement (``device_map_for``) apply the same way
    in every recipe."""
    from transformers import AutoModelForCausalLM
    from trl import get_quantization_config

    quantization = get_quantization_config(model_args)
    return AutoModelForCausalLM.from_pretrained(
        name,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization,
        device_map=device_map_for(quantization is not None, args),
        trust_remote_code=args.trust_remote_code,
    )


def load_tokenizer(name: str, model_args: ModelConfig, args: TrainingArguments) -> Any:
    """The tokenizer from the same folder or hub id and revision as the model, so the two never come
    from different revisions."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        name, revision=model_args.model_revision, trust_remote_code=args.trust_remote_code
    )


# ---------------------------------------------------------------- data


def load_splits(script_args: ScriptArguments, want_eval: bool) -> tuple[Any, Any]:
    """The train split and, if evaluation is on, the test split (or 10% held out of train when the
    data has none: a single JSONL file only has ``train``)."""
    from datasets import load_dataset

    name = script_args.dataset_name
    path = Path(name).expanduser()
    if path.is_file() and path.suffix in FILE_BUILDERS:
        data = load_dataset(FILE_BUILDERS[path.suffix], data_files={"train": str(path)})
    else:
        data = load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)
    train = data[script_args.dataset_train_split]
    if not want_eval:
        return train, None
    if script_args.dataset_test_split in data:
        return train, data[script_args.dataset_test_split]
    held_out = train.train_test_split(test_size=0.1, seed=0)
    return held_out["train"], held_out["test"]


# ---------------------------------------------------------------- train


def resume_target(args: TrainingArguments) -> str | bool | None:
    """``--resume_from_checkpoint last`` (or ``true``) resumes from the newest checkpoint in the output
    folder if there is one and starts fresh otherwise, so the same command works after a crash."""
    value = args.resume_from_checkpoint
    if value is None or str(value).lower() not in RESUME_LATEST:
        return value
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(args.output_dir)
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
