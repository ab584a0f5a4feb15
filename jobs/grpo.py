"""GRPO with TRL on GSM8K-style arithmetic: several reward functions, no vLLM, full or LoRA.

An ordinary TRL script: it runs as ``python jobs/grpo.py``, under plain ``accelerate launch`` or
under ``ftlaunch``, and imports nothing from ftlaunch. It parses its ``GRPOConfig`` before it loads
the model. Data: a conversational ``prompt`` whose system message asks for
``<reasoning>...</reasoning><answer>...</answer>``, and an integer ``answer``. Rewards: correctness
against ``answer``, an integer answer, strict and soft format, and XML tag counting.

Generation runs in the training processes (no vLLM). This recipe defaults to ``--num_generations
4`` and ``--max_completion_length 32`` (TRL: 8 and 512) so a CPU step takes seconds; raise them on
GPUs. ``per_device_train_batch_size x processes x steps_per_generation`` must be divisible by
``num_generations``.

    python jobs/grpo.py --output_dir out/grpo --max_steps 5 --use_cpu
    python jobs/grpo.py --use_peft --lora_r 8 --num_generations 8 --max_completion_length 200
    ftlaunch --procs 2 --zero 3 jobs/grpo.py --per_device_train_batch_size 2 --max_steps 2

Without ``--model_name_or_path`` (or with ``tiny``) a ~100k-parameter Qwen2 is built locally by
``make_tiny.py`` into ``$FTLAUNCH_TINY_DIR`` (default ``~/.cache/ftlaunch/tiny-qwen2``).
"""

import re
from dataclasses import dataclass
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
from trl import GRPOConfig, GRPOTrainer, ModelConfig, ScriptArguments, TrlParser, get_peft_config

DEFAULT_DATA = DATA_DIR / "grpo_math.jsonl"
# Recipe defaults that differ from TRL's, sized for a CPU; any flag still overrides them.
CPU_SIZED_DEFAULTS = {"num_generations": 4, "max_completion_length": 32}

ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
STRICT_FORMAT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n?$", re.DOTALL)
SOFT_FORMAT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
TAGS = ("<reasoning>\n", "\n</reasoning>\n", "\n<answer>\n", "\n</answer>")


@dataclass
class GRPOScriptArguments(ScriptArguments):
    """TRL's script arguments, with the shipped math prompts as default."""

    dataset_name: str = dataset_name_field(DEFAULT_DATA)


# ---------------------------------------------------------------- rewards


def completion_texts(completions: list[Any]) -> list[str]:
    """Conversational completions arrive as ``[{"role": "assistant", "content": ...}]``."""
    return [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]


def extract_answer(text: str) -> str:
    match = ANSWER.search(text)
    return match.group(1).strip() if match else ""


def correctness_reward(completions: list[Any], answer: list[Any], **_: Any) -> list[float]:
    """2.0 when the tagged answer equals the reference (``answer`` may be an int or a string)."""
    texts = completion_texts(completions)
    return [2.0 if extract_answer(t) == str(a).strip() else 0.0 for t, a in zip(texts, answer, strict=True)]


def integer_reward(completions: list[Any], **_: Any) -> list[float]:
    """0.5 for any integer answer: a gradient towards the right kind of answer before it is right."""
    return [0.5 if re.fullmatch(r"-?\d+", extract_answer(t)) else 0.0 for t in completion_texts(completions)]


def strict_format_reward(completions: list[Any], **_: Any) -> list[float]:
    return [0.5 if STRICT_FORMAT.match(t) else 0.0 for t in completion_texts(completions)]


def soft_format_reward(completions: list[Any], **_: Any) -> list[float]:
    return [0.5 if SOFT_FORMAT.search(t) else 0.0 for t in completion_texts(completions)]


def xml_count_reward(completions: list[Any], **_: Any) -> list[float]:
    """0.125 per tag present exactly once, minus a little for text trailing the closing tag: partial
    credit that rewards the format long before a random model emits all of it."""
    scores = []
    for text in completion_texts(completions):
        score = sum(0.125 for tag in TAGS if text.count(tag) == 1)
        if "\n</answer>" in text:
            score -= 0.001 * len(text.split("\n</answer>")[-1])
        scores.append(score)
    return scores


REWARDS = [correctness_reward, integer_reward, strict_format_reward, soft_format_reward, xml_count_reward]


def main() -> None:
    parser = TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig))
    parser.set_defaults(use_cpu=no_accelerator(), **CPU_SIZED_DEFAULTS)
    script_args, training_args, model_args = parser.parse_args_and_config()
    # The config exists from here on; only now is anything heavy loaded.
    name = resolve_model_name(model_args.model_name_or_path)
    train, evaluation = load_splits(script_args, want_eval=training_args.eval_strategy != "no")
    trainer = GRPOTrainer(
        model=load_model(name, model_args, training_args),
        reward_funcs=REWARDS,
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
