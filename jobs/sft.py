"""Supervised fine-tuning with TRL: full, LoRA, QLoRA or prefix tuning.

An ordinary TRL script: it runs as ``python jobs/sft.py``, under plain ``accelerate launch`` or
under ``ftlaunch``, and imports nothing from ftlaunch. It parses its ``SFTConfig`` before it loads
the model, so a launcher (or a typo) can stop it before minutes of loading.

Data: conversational (``messages``; add ``--assistant_only_loss`` to train on the assistant turns
only, which needs a chat template with ``{% generation %}`` markers, as the tiny model's has) or
prompt-completion (``prompt``/``completion``; the loss is on the completion only, TRL's default).

    python jobs/sft.py --output_dir out/sft --max_steps 10 --use_cpu
    python jobs/sft.py --use_peft --lora_r 8 --lora_target_modules all-linear          # LoRA
    python jobs/sft.py --use_peft --load_in_4bit                                       # QLoRA (nf4)
    python jobs/sft.py --peft_type prefix --num_virtual_tokens 20                      # prefix tuning
    python jobs/sft.py --dataset_name jobs/data/sft_prompt_completion.jsonl            # completion-only
    ftlaunch --procs 2 --zero 2 jobs/sft.py --use_peft --assistant_only_loss --max_steps 10
    ftlaunch --gpus 8 --zero 1 jobs/sft.py --model_name_or_path Qwen/Qwen2.5-7B-Instruct --use_peft \\
        --dataset_name my_chats.jsonl --assistant_only_loss

Without ``--model_name_or_path`` (or with ``tiny``) a ~100k-parameter Qwen2 is built locally by
``make_tiny.py`` into ``$FTLAUNCH_TINY_DIR`` (default ``~/.cache/ftlaunch/tiny-qwen2``).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe_utils import (
    DATA_DIR,
    dataset_name_field,
    load_model,
    load_splits,
    load_tokenizer,
    no_accelerator,
    resolve_model_name,
    resume_target,
)
from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser, get_peft_config

DEFAULT_DATA = DATA_DIR / "sft_messages.jsonl"


@dataclass
class SFTScriptArguments(ScriptArguments):
    """TRL's script arguments, with the shipped data as default and the PEFT method to use."""

    dataset_name: str = dataset_name_field(DEFAULT_DATA)
    peft_type: str = field(
        default="lora",
        metadata={
            "help": "lora (needs --use_peft; the --lora_* flags apply) or prefix (prefix tuning, alone).",
            "choices": ["lora", "prefix"],
        },
    )
    num_virtual_tokens: int = field(default=20, metadata={"help": "Prefix tuning: number of virtual tokens."})
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "After LoRA training, also save base + adapter merged into OUTPUT_DIR/merged."},
    )


# ---------------------------------------------------------------- PEFT


def peft_config_for(script_args: SFTScriptArguments, model_args: ModelConfig) -> Any:
    """LoRA from TRL's ``--use_peft``/``--lora_*`` flags, or prefix tuning with ``--peft_type prefix``."""
    if script_args.peft_type == "prefix":
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=script_args.num_virtual_tokens)
    return get_peft_config(model_args)


def fit_args_to_peft(script_args: SFTScriptArguments, args: SFTConfig) -> None:
    """Prefix tuning feeds its virtual tokens to every layer as past key values, and transformers drops
    those inside checkpointed layers ("The size of tensor a (86) must match the size of tensor b (94)
    at non-singleton dimension 3"). TRL turns activation checkpointing on by default, so it is turned
    off here, loudly, rather than failing at the first step."""
    if script_args.peft_type != "prefix" or not args.gradient_checkpointing:
        return
    print("sft.py: prefix tuning cannot use activation checkpointing; turning it off", file=sys.stderr)
    for name in ("gradient_checkpointing", "activation_checkpointing"):  # the latter is the new name
        if hasattr(args, name):
            setattr(args, name, False)


# ---------------------------------------------------------------- train


def save_merged(name: str, model_args: ModelConfig, args: SFTConfig, tokenizer: Any) -> None:
    """Merge the saved LoRA adapter into a fresh, unquantized copy of the base model (merging into
    4-bit weights would lose precision) and save it with the tokenizer for plain inference."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        name,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    merged = PeftModel.from_pretrained(base, args.output_dir).merge_and_unload()
    target = Path(args.output_dir) / "merged"
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)
    print(f"merged model saved to {target}")


def main() -> None:
    parser = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))
    parser.set_defaults(use_cpu=no_accelerator())
    script_args, training_args, model_args = parser.parse_args_and_config()
    fit_args_to_peft(script_args, training_args)
    # The config exists from here on; only now is anything heavy loaded.
    name = resolve_model_name(model_args.model_name_or_path)
    train, evaluation = load_splits(script_args, want_eval=training_args.eval_strategy != "no")
    trainer = SFTTrainer(
        model=load_model(name, model_args, training_args),
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=load_tokenizer(name, model_args, training_args),
        peft_config=peft_config_for(script_args, model_args),
    )
    trainer.train(resume_from_checkpoint=resume_target(training_args))
    trainer.save_model(training_args.output_dir)
    if script_args.merge_adapter and model_args.use_peft and script_args.peft_type == "lora":
        trainer.accelerator.wait_for_everyone()
        if trainer.accelerator.is_main_process:
            save_merged(name, model_args, training_args, trainer.processing_class)
    trainer.end()


if __name__ == "__main__":
    main()
