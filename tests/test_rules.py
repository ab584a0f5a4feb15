"""The batch arithmetic, property-tested (the identity always holds, suggestions are always valid),
and SLURM's time formats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.rules import resolve_batch, resume_spec, same_training_problems, time_minutes, validate
from launcher.spec import LaunchSpec, Topology, Zero

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


def spec_on(procs: int, stage: int = 2) -> LaunchSpec:
    return LaunchSpec(recipe="sft.py", topology=Topology(procs=procs), zero=Zero(stage=stage))


SAVED = {"world_size": 2, "zero_stage": 2, "micro": 2, "grad_accum": 2, "global_batch": 8}


@pytest.mark.parametrize(("procs", "accum"), [(1, 4), (2, 2), (4, 1)])
def test_resume_keeps_the_global_batch_on_any_dividing_world_size(procs: int, accum: int) -> None:
    spec, problems = resume_spec(spec_on(procs), SAVED)
    resolved = validate(spec)
    assert problems == [] and (resolved.batch.micro, resolved.batch.grad_accum) == (2, accum)
    assert resolved.batch.global_batch == 8


def test_resume_on_a_world_size_that_cannot_keep_the_batch_names_the_ones_that_can() -> None:
    _, problems = resume_spec(spec_on(3), SAVED)
    assert len(problems) == 1 and "world size 3" in problems[0] and "1, 2, 4" in problems[0]


@pytest.mark.parametrize(
    ("saved", "wanted", "ok"), [(1, 2, True), (2, 1, True), (2, 3, False), (0, 2, False)]
)
def test_resume_across_stages_only_where_the_layout_loads(saved: int, wanted: int, ok: bool) -> None:
    _, problems = resume_spec(spec_on(2, wanted), {**SAVED, "zero_stage": saved})
    assert (problems == []) is ok
    if not ok:
        assert f"--zero {wanted}" in problems[0] and "resume with --zero" in problems[0]


def test_a_checkpoint_continues_only_its_recipe_and_model() -> None:
    recorded = LaunchSpec(recipe="jobs/sft.py", args=("--model_name_or_path", "A"))
    assert (
        same_training_problems(
            recorded, LaunchSpec(recipe="/abs/jobs/sft.py", args=("--model_name_or_path", "A"))
        )
        == []
    )
    problems = same_training_problems(
        recorded, LaunchSpec(recipe="dpo.py", args=("--model_name_or_path", "B"))
    )
    assert len(problems) == 2 and "dpo.py" in problems[0] and "B" in problems[1]
