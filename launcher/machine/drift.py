"""What transformers, TRL, peft and datasets renamed or removed since the tutorials were written.

One table, read by the pre-flight check (``machine/preflight.py``) and held against the installed
libraries by ``tests/test_drift.py``: an entry whose old name exists again, or whose replacement
does not exist, fails that test, so the table cannot rot silently. Each entry says what to write
instead, in the words a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every config class a recipe may build: each has all of TrainingArguments' fields.
CONFIGS = (
    "TrainingArguments",
    "Seq2SeqTrainingArguments",
    "SFTConfig",
    "DPOConfig",
    "GRPOConfig",
    "RewardConfig",
    "KTOConfig",
)


TRAINERS = ("Trainer", "SFTTrainer", "DPOTrainer", "GRPOTrainer", "RewardTrainer", "KTOTrainer")


@dataclass(frozen=True)
class Keyword:
    """``owner(old=...)`` no longer works. ``owner`` "TrainingArguments" stands for every config class.
    ``new`` names the keyword to use instead, on ``new_owner`` when it moved (None: removed)."""

    owner: str
    old: str
    new: str | None
    new_owner: str | None = None
    advice: str = ""

    def fix(self) -> str:
        if self.new is None:
            return self.advice
        if self.new_owner:
            return f"moved: use {self.new_owner}({self.new}=...){f' ({self.advice})' if self.advice else ''}"
        return f"renamed: use {self.new}=...{f' ({self.advice})' if self.advice else ''}"

    def flag_fix(self) -> str:
        """The same advice for a command-line argument (``--evaluation_strategy``)."""
        if self.new is not None and self.new_owner is None:
            return f"renamed: use --{self.new}"
        return self.fix()


@dataclass(frozen=True)
class Name:
    """``from module import old`` no longer works; ``new`` is ``module:name`` to import instead,
    or None when the behaviour is had another way (``advice``)."""

    module: str
    old: str
    new: str | None
    advice: str = ""

    def fix(self) -> str:
        if self.new is None:
            return self.advice
        module, name = self.new.split(":")
        return f"use `from {module} import {name}`{f' ({self.advice})' if self.advice else ''}"


KEYWORDS = (
    Keyword("TrainingArguments", "evaluation_strategy", "eval_strategy"),
    Keyword(
        "TrainingArguments",
        "warmup_ratio",
        None,
        advice="warmup_ratio was removed; give warmup_steps (e.g. 3% of max_steps) instead",
    ),
    Keyword("TrainingArguments", "per_gpu_train_batch_size", "per_device_train_batch_size"),
    Keyword("TrainingArguments", "per_gpu_eval_batch_size", "per_device_eval_batch_size"),
    Keyword("TrainingArguments", "no_cuda", "use_cpu"),
    Keyword("TrainingArguments", "push_to_hub_token", "hub_token"),
    Keyword("TrainingArguments", "include_inputs_for_metrics", "include_for_metrics", advice='["inputs"]'),
    Keyword(
        "TrainingArguments",
        "overwrite_output_dir",
        None,
        advice="overwrite_output_dir was removed; the trainer writes into output_dir as it is (ftlaunch "
        "refuses an output_dir holding another run's checkpoints)",
    ),
    Keyword(
        "TrainingArguments",
        "logging_dir",
        None,
        advice="logging_dir was removed; trackers take their folder from their own settings "
        "(e.g. TENSORBOARD_LOGGING_DIR)",
    ),
    Keyword(
        "TrainingArguments",
        "save_safetensors",
        None,
        advice="save_safetensors was removed; checkpoints are always safetensors",
    ),
    Keyword("TrainingArguments", "fp16_backend", None, advice="fp16_backend was removed; drop it"),
    Keyword(
        "TrainingArguments",
        "half_precision_backend",
        None,
        advice="half_precision_backend was removed; drop it",
    ),
    Keyword(
        "TrainingArguments",
        "use_mps_device",
        None,
        advice="use_mps_device was removed; MPS is used when present",
    ),
    Keyword("SFTConfig", "max_seq_length", "max_length"),
    Keyword("SFTConfig", "dataset_batch_size", None, advice="dataset_batch_size was removed; drop it"),
    Keyword(
        "SFTConfig",
        "num_of_sequences",
        None,
        advice="num_of_sequences was removed with ConstantLengthDataset; packing=True packs by max_length",
    ),
    Keyword("SFTConfig", "chars_per_token", None, advice="chars_per_token was removed; drop it"),
    Keyword(
        "DPOConfig",
        "max_prompt_length",
        None,
        advice="max_prompt_length was removed; max_length bounds "
        "prompt + completion, cut as truncation_mode says",
    ),
    Keyword(
        "DPOConfig",
        "max_completion_length",
        None,
        advice="max_completion_length was removed; max_length bounds prompt + completion",
    ),
    Keyword("DPOConfig", "max_target_length", None, advice="max_target_length was removed; use max_length"),
    Keyword("DPOConfig", "generate_during_eval", None, advice="generate_during_eval was removed; drop it"),
    Keyword("DPOConfig", "reference_free", None, advice="reference_free was removed; drop it"),
    Keyword("DPOConfig", "rpo_alpha", None, advice="rpo_alpha was removed; use loss_type and loss_weights"),
    Keyword(
        "DPOConfig",
        "is_encoder_decoder",
        None,
        advice="is_encoder_decoder was removed; it is read from the model",
    ),
    Keyword(
        "GRPOConfig",
        "max_prompt_length",
        None,
        advice="max_prompt_length was removed; prompts are not "
        "truncated (filter or shorten long prompts in the dataset)",
    ),
    Keyword("Trainer", "tokenizer", "processing_class"),
    Keyword("SFTTrainer", "tokenizer", "processing_class"),
    Keyword("DPOTrainer", "tokenizer", "processing_class"),
    Keyword("GRPOTrainer", "tokenizer", "processing_class"),
    Keyword("SFTTrainer", "max_seq_length", "max_length", "SFTConfig"),
    Keyword("SFTTrainer", "packing", "packing", "SFTConfig"),
    Keyword("SFTTrainer", "dataset_text_field", "dataset_text_field", "SFTConfig"),
    Keyword("SFTTrainer", "dataset_kwargs", "dataset_kwargs", "SFTConfig"),
    Keyword("SFTTrainer", "dataset_num_proc", "dataset_num_proc", "SFTConfig"),
    Keyword("SFTTrainer", "neftune_noise_alpha", "neftune_noise_alpha", "SFTConfig"),
    Keyword("SFTTrainer", "model_init_kwargs", "model_init_kwargs", "SFTConfig"),
    Keyword("DPOTrainer", "beta", "beta", "DPOConfig"),
    Keyword("DPOTrainer", "loss_type", "loss_type", "DPOConfig"),
    Keyword("DPOTrainer", "label_smoothing", "label_smoothing", "DPOConfig"),
    Keyword("DPOTrainer", "max_length", "max_length", "DPOConfig"),
    Keyword("DPOTrainer", "truncation_mode", "truncation_mode", "DPOConfig"),
    Keyword(
        "DPOTrainer",
        "max_prompt_length",
        None,
        advice="max_prompt_length was removed; DPOConfig(max_length=) bounds prompt + completion",
    ),
)


NAMES = (
    Name(
        "trl",
        "DataCollatorForCompletionOnlyLM",
        None,
        advice="DataCollatorForCompletionOnlyLM was removed: give prompt-completion data (prompt/completion "
        "columns; the loss is then on the completion only, SFTConfig(completion_only_loss=True) is the "
        "default) or conversational data with SFTConfig(assistant_only_loss=True) and a chat template "
        "with {% generation %} markers",
    ),
    Name(
        "trl",
        "ConstantLengthDataset",
        None,
        advice="ConstantLengthDataset was removed; use SFTConfig(packing=True)",
    ),
    Name("trl", "setup_chat_format", "trl:clone_chat_template", advice="it copies a model's chat template"),
    Name(
        "trl",
        "get_kbit_device_map",
        None,
        advice="get_kbit_device_map was removed; pass device_map yourself "
        "(ftlaunch's ranks each use their own device)",
    ),
    Name("trl", "ORPOTrainer", "trl.experimental.orpo:ORPOTrainer"),
    Name("trl", "ORPOConfig", "trl.experimental.orpo:ORPOConfig"),
    Name("trl", "CPOTrainer", "trl.experimental.cpo:CPOTrainer"),
    Name("trl", "CPOConfig", "trl.experimental.cpo:CPOConfig"),
    Name("trl", "OnlineDPOTrainer", "trl.experimental.online_dpo:OnlineDPOTrainer"),
    Name("trl", "OnlineDPOConfig", "trl.experimental.online_dpo:OnlineDPOConfig"),
    Name("trl", "GKDTrainer", "trl.experimental.gkd:GKDTrainer"),
    Name("transformers", "AdamW", "torch.optim:AdamW", advice="or leave the optimizer to optim="),
    Name(
        "transformers",
        "TextDataset",
        None,
        advice='TextDataset was removed; use datasets.load_dataset("text", data_files=...)',
    ),
    Name(
        "transformers",
        "LineByLineTextDataset",
        None,
        advice='LineByLineTextDataset was removed; use datasets.load_dataset("text", data_files=...)',
    ),
    Name("transformers", "is_torch_tpu_available", "transformers:is_torch_xla_available"),
    Name("peft", "prepare_model_for_int8_training", "peft:prepare_model_for_kbit_training"),
    Name(
        "datasets",
        "load_metric",
        None,
        advice="load_metric was removed; pip install evaluate, then evaluate.load(NAME)",
    ),
)


def keyword_change(owner: str, keyword: str) -> Keyword | None:
    """The table's entry for ``owner(keyword=...)``; config classes share TrainingArguments' entries."""
    for entry in KEYWORDS:
        if entry.old == keyword and (
            entry.owner == owner or (entry.owner == "TrainingArguments" and owner in CONFIGS)
        ):
            return entry
    return None


def name_change(module: str, name: str) -> Name | None:
    """The table's entry for ``from module import name`` (a submodule of a watched package counts)."""
    top = module.split(".")[0]
    for entry in NAMES:
        if entry.old == name and entry.module == top:
            return entry
    return None
