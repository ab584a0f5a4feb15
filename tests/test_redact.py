"""Secret recipe arguments: concealed in every record, revealed exactly to the recipe."""

from __future__ import annotations

import dataclasses

import pytest

from launcher import redact
from launcher.errors import SpecError

TOKEN = "hf_" + "a1B2" * 9
ROUND_TRIPS = [
    [],
    ["--hub_token", TOKEN],
    [f"--hub_token={TOKEN}"],
    ["--api-key", "k1", "--db_password", "p w", "--client_secret", "$(id)"],
    ["--hub_token", "first", "--hub_token", "second"],
    ["positional", TOKEN, "sk-" + "x" * 24, "AKIA" + "A" * 16],
    ["--data", "https://user:pa ss@host/x", "--mirror=https://u:p@h"],
    ["--hub_token"],  # no value: left alone
    ["--hub_token", "--other"],
    ["", "ü", "日本", "'", '"', "--", "${HOME}"],
]


@pytest.mark.parametrize("args", ROUND_TRIPS)
def test_conceal_then_reveal_gives_the_recipe_its_arguments(args: list[str]) -> None:
    public, values = redact.conceal(args)
    assert redact.reveal(public, values) == args
    for value in values.values():
        assert all(value not in arg for arg in public), public


def test_placeholders_name_their_flag_and_stay_distinct() -> None:
    public, values = redact.conceal(["--hub_token", "a", "--hub_token", "b", f"--x={TOKEN}", TOKEN])
    assert public[1] == "${FTLAUNCH_SECRET_HUB_TOKEN}" and public[3] == "${FTLAUNCH_SECRET_HUB_TOKEN_2}"
    assert public[4] == "--x=${FTLAUNCH_SECRET_X}" and public[5] == "${FTLAUNCH_SECRET_ARG6}"
    assert values["FTLAUNCH_SECRET_HUB_TOKEN_2"] == "b"


@pytest.mark.parametrize(
    "args",
    [
        ["--pad_token", "<pad>"],
        ["--max_tokens", "5"],
        ["--tokenizer_name", "t"],
        ["--keep", "3"],
        ["hf_short"],
    ],
)
def test_ordinary_arguments_are_left_alone(args: list[str]) -> None:
    assert redact.conceal(args) == (tuple(args), {})


def test_no_trainer_or_trl_argument_but_hub_token_is_taken_for_a_secret() -> None:
    import trl
    from transformers import TrainingArguments

    classes = [
        TrainingArguments,
        trl.SFTConfig,
        trl.DPOConfig,
        trl.GRPOConfig,
        trl.ModelConfig,
        trl.ScriptArguments,
    ]
    names = {f.name for cls in classes for f in dataclasses.fields(cls)}
    assert {n for n in names if redact.is_secret_flag(f"--{n}")} == {"hub_token"}


def test_a_missing_secret_names_the_variable_to_set() -> None:
    public, _ = redact.conceal(["--hub_token", TOKEN])
    with pytest.raises(SpecError, match="FTLAUNCH_SECRET_HUB_TOKEN"):
        redact.reveal(public, {})
    assert redact.missing(public, {"FTLAUNCH_SECRET_HUB_TOKEN": TOKEN}) == []
