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

from dataclasses import dataclass

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
from trl import DPOConfig, DPOTrainer, ModelConfig, ScriptArguments, TrlParser, get_peft_config

DEFAULT_DATA = DATA_DIR / "dpo.jsonl"


@dataclass
class DPOScriptArguments(ScriptArguments):
    """TRL's script arguments, with the shipped preference data as default."""

    dataset_name: str = dataset_name_field(DEFAULT_DATA)


def main() -> None:
    parser = TrlParser((DPOScriptArguments, DPOConfig, ModelConfig))
    parser.set_defaults(use_cpu=no_accelerator())
    script_args, training_args, model_args = parser.parse_args_and_config()
    # The config exists from here on; only now is anything heavy loaded.
    name = resolve_model_name(model_args.model_name_or_path)
    train, evaluation = load_splits(script_args, want_eval=training_args.eval_strategy != "no")
    trainer = DPOTrainer(
        model=load_model(name, model_args, training_args),
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=load_tokenizer(name, model_args, training_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resume_target(training_args))
    trainer.save_model(training_args.output_dir)
    trainer.end()


if __name__ == "__main__":
    main()
