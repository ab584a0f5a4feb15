"""The batch arithmetic, property-tested (the identity always holds, suggestions are always valid),
and SLURM's time formats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.rules import resolve_batch, time_minutes

small = st.integers(min_value=1, max_value=64)
worlds = st.integers(min_value=1, max_value=256)


@given(micro=small, accum=small, world=worlds)
def test_two_of_three_give_the_third(micro: int, accum: int, world: int) -> None:
    glob = micro * accum * world
    for request in ((micro, accum, None), (micro, None, glob), (None, accum, glob), (micro, accum, glob)):
        plan, problems = resolve_batch(*request, world)
        assert problems == []
        assert (plan.micro, plan.grad_accum, plan.global_batch) == (micro, accum, glob)


@given(micro=small, accum=small, world=worlds, delta=st.integers(min_value=1, max_value=1000))
def test_inconsistent_triple_is_refused_with_the_numbers(
    micro: int, accum: int, world: int, delta: int
) -> None:
    wrong = micro * accum * world + delta
    _, problems = resolve_batch(micro, accum, wrong, world)
    assert len(problems) == 1
    assert f"--global-batch {wrong}" in problems[0] and str(micro * accum * world) in problems[0]


@given(micro=small, world=worlds, glob=st.integers(min_value=1, max_value=100_000))
def test_non_divisible_global_suggests_only_valid_values(micro: int, world: int, glob: int) -> None:
    _, problems = resolve_batch(micro, None, glob, world)
    if glob % (micro * world) == 0:
        assert problems == []
        return
    (message,) = problems
    suggested = [
        int(w) for w in message.split("nearest valid: ")[1].replace("--global-batch", "").split(" or ")
    ]
    assert suggested, message
    for value in suggested:
        plan, again = resolve_batch(micro, None, value, world)
        assert again == [] and plan.grad_accum is not None and plan.grad_accum >= 1
    assert min(abs(s - glob) for s in suggested) < micro * world


def test_one_value_leaves_the_rest_to_the_recipe() -> None:
    plan, problems = resolve_batch(4, None, None, 8)
    assert problems == [] and (plan.micro, plan.grad_accum, plan.global_batch) == (4, None, None)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90", 90),
        ("24:00:00", 1440),
        ("10:30", 11),
        ("1-00", 1440),
        ("2-12:30", 3630),
        ("0", None),
        ("1:2:3:4", None),
        ("tomorrow", None),
        ("2-", None),
    ],
)
def test_slurm_time_formats(text: str, minutes: int | None) -> None:
    assert time_minutes(text) == minutes
