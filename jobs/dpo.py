"""Direct preference optimisation (DPO) with TRL: full fine-tuning or LoRA / QLoRA.

An ordinary TRL script: it runs as ``python jobs/dpo.py``, under plain ``accelerate launch`` or
under ``ftlaunch``, and imports nothing from ftlaunch. It parses its ``DPOConfig`` before it loads
the model. Data: ``prompt``/``chosen``/``rejected`` rows (plain text or conversational).

With ``--use_peft`` the reference model is the base model with the adapter switched off (no second
copy in memory); without it TRL loads a frozen copy of the model as the reference.

    python jobs/dpo.py --output_dir out/dpo --max_steps 10 --use_cpu
    python jobs/dpo.py --use_peft --lora_r 8                                          # LoRA
    ftlaunch --procs 2 --zero 2 --global-batch 8 --micro-batch 2 jobs/dpo.py --use_peft --max_steps 5

Without ``--model_name_or_path`` (or with ``tiny``) a ~100k-parameter Qwen2 is built locally by
``make_tiny.py`` into ``$FTLAUNCH_TINY_DIR`` (default ``~/.cache/ftlaunch/tiny-qwen2``).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import DPOConfig, DPOTrainer, ModelConfig, ScriptArguments, TrlParser, get_peft_config

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "data" / "dpo.jsonl"
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
TINY_ALIASES = (None, "", "tiny")
RESUME_LATEST = ("true", "last", "latest")


@dataclass
class DPOScriptArguments(ScriptArguments):
    """TRL's script arguments, with the shipped preference data as default."""

    dataset_name: str = field(
        default=str(DEFAULT_DATA),
        metadata={"help": "A .json/.jsonl/.csv/.parquet file, a dataset folder or a hub dataset name."},
    )


def no_accelerator() -> bool:
    """TRL defaults to ``bf16=True``, which transformers refuses on a machine without an accelerator
    unless ``use_cpu`` is set ("Your setup doesn't support bf16/gpu. You need to assign use_cpu if
    you want to train the model on CPU."); so on such a machine ``--use_cpu`` becomes the default."""
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, ROCm, XPU, MPS, ...
    return not (accelerator.is_available() if accelerator is not None else torch.cuda.is_available())


def resolve_model_name(name: str | None) -> str:
    """``tiny`` or nothing means the locally built tiny model; ``make_tiny`` is imported only then."""
    if name not in TINY_ALIASES:
        return str(name)
    sys.path.insert(0, str(HERE))
    from make_tiny import resolve_model_name as tiny

    return tiny(name)


def device_map_for(quantized: bool, args: DPOConfig) -> Any:
    """bitsandbytes needs an explicit placement: this rank's GPU, or the CPU when there is none."""
    import torch
    from accelerate import PartialState
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not quantized or is_deepspeed_zero3_enabled():
        return None
    if args.use_cpu or not torch.cuda.is_available():
        return "cpu"
    return {"": PartialState().local_process_index}


def load_model(name: str, model_args: ModelConfig, args: DPOConfig) -> Any:
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


def load_splits(script_args: ScriptArguments, want_eval: bool) -> tuple[Any, Any]:
    """The train split and, if evaluation is on, the test split (or 10% held out of train)."""
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


def resume_target(args: DPOConfig) -> str | bool | None:
    """``--resume_from_checkpoint last`` resumes from the newest checkpoint if any, else starts fresh."""
    value = args.resume_from_checkpoint
    if value is None or str(value).lower() not in RESUME_LATEST:
        return value
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(args.output_dir)
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def main() -> None:
    parser = TrlParser((DPOScriptArguments, DPOConfig, ModelConfig))
    parser.set_defaults(use_cpu=no_accelerator())
    script_args, training_args, model_args = parser.parse_args_and_config()
    # The config exists from here on; only now is anything heavy loaded.
    name = resolve_model_name(model_args.model_name_or_path)
    train, evaluation = load_splits(script_args, want_eval=training_args.eval_strategy != "no")
    from transformers import AutoTokenizer

    trainer = DPOTrainer(
        model=load_model(name, model_args, training_args),
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=AutoTokenizer.from_pretrained(
            name, revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code
        ),
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resume_target(training_args))
    trainer.save_model(training_args.output_dir)
    trainer.end()


if __name__ == "__main__":
    main()
