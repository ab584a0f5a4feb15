"""Write the small JSONL data sets the recipes train on by default.

The files are committed so that recipes, tests and the tiny tokenizer (trained on this text) work
with no hub access; this script only documents and reproduces them. It is deterministic: the same
Python gives byte-identical files, so a re-run shows up in ``git diff`` only if the script changed.

    python jobs/data/generate.py            # rewrites jobs/data/*.jsonl next to this file
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROWS = 64
HERE = Path(__file__).resolve().parent

SFT_SYSTEM = "You are a concise math tutor. Show the calculation, then give the result."
GRPO_SYSTEM = "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "June", "Kai", "Lea")
ITEMS = ("apples", "marbles", "stickers", "books", "coins", "shells", "pencils", "cards")

# A problem: (question, worked reasoning, integer answer).
Problem = tuple[str, str, int]


def add_problem(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    question = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
    return question, f"{name} starts with {a} and adds {b}: {a} + {b} = {a + b}.", a + b


def subtract_problem(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    b = rng.randint(2, 40)
    a = b + rng.randint(1, 50)
    question = f"{name} had {a} {item} and gave away {b}. How many {item} are left?"
    return question, f"{name} gives away {b} of {a}: {a} - {b} = {a - b}.", a - b


def multiply_problem(rng: random.Random) -> Problem:
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    question = f"A box holds {a} {item}. How many {item} are in {b} boxes?"
    return question, f"Each of the {b} boxes holds {a}: {b} * {a} = {a * b}.", a * b


def divide_problem(rng: random.Random) -> Problem:
    item = rng.choice(ITEMS)
    b, k = rng.randint(2, 9), rng.randint(2, 12)
    question = f"{b * k} {item} are shared equally among {b} friends. How many {item} does each friend get?"
    return question, f"Split {b * k} into {b} equal parts: {b * k} / {b} = {k}.", k


PROBLEMS: tuple[Callable[[random.Random], Problem], ...] = (
    add_problem,
    subtract_problem,
    multiply_problem,
    divide_problem,
)


def problems(seed: int, n: int = ROWS) -> list[Problem]:
    """``n`` problems cycling through the four kinds, so every file covers all of them."""
    rng = random.Random(seed)
    return [PROBLEMS[i % len(PROBLEMS)](rng) for i in range(n)]


def sft_messages() -> list[dict[str, Any]]:
    """Conversational rows (system/user/assistant), for ``assistant_only_loss=True``."""
    return [
        {
            "messages": [
                {"role": "system", "content": SFT_SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": f"{reasoning} The answer is {answer}."},
            ]
        }
        for question, reasoning, answer in problems(seed=1)
    ]


def sft_prompt_completion() -> list[dict[str, Any]]:
    """Standard prompt/completion rows: TRL's completion-only loss is the default for these."""
    return [
        {"prompt": f"Question: {question}\nAnswer:", "completion": f" {reasoning} The answer is {answer}."}
        for question, reasoning, answer in problems(seed=2)
    ]


def dpo() -> list[dict[str, Any]]:
    """Preference rows: the chosen answer is right, the rejected one is off by a small amount."""
    rng = random.Random(3)
    rows = []
    for question, reasoning, answer in problems(seed=3):
        wrong = answer + rng.choice((-3, -2, -1, 1, 2, 3))
        rows.append(
            {
                "prompt": f"Question: {question}\nAnswer:",
                "chosen": f" {reasoning} The answer is {answer}.",
                "rejected": f" The answer is {wrong}.",
            }
        )
    return rows


def grpo_math() -> list[dict[str, Any]]:
    """GSM8K-style rows: a conversational prompt and an integer ``answer`` the rewards check."""
    return [
        {
            "prompt": [
                {"role": "system", "content": GRPO_SYSTEM},
                {"role": "user", "content": question},
            ],
            "answer": answer,
        }
        for question, _, answer in problems(seed=4)
    ]


FILES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "sft_messages.jsonl": sft_messages,
    "sft_prompt_completion.jsonl": sft_prompt_completion,
    "dpo.jsonl": dpo,
    "grpo_math.jsonl": grpo_math,
}


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else HERE
    out.mkdir(parents=True, exist_ok=True)
    for name, make in FILES.items():
        write_jsonl(out / name, make())
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
