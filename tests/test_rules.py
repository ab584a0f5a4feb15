"""The batch arithmetic, property-tested (the identity always holds, suggestions are always valid),
and SLURM's time formats."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.errors import SpecError
from launcher.rank.guard import accumulation_for_global_batch
from launcher.rules.batch import product, resolve_batch
from launcher.rules.resume import batch_change, resume_spec, same_training_problems
from launcher.rules.validate import time_minutes, validate
from launcher.spec.launchspec import Batch, LaunchSpec, Topology, Zero

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


@given(micro=small, accum=small, nodes=st.integers(1, 4), gpus=st.integers(1, 8), recipe_micro=small)
def test_a_global_batch_alone_is_split_by_the_rank_with_the_recipes_micro_batch(
    micro: int, accum: int, nodes: int, gpus: int, recipe_micro: int
) -> None:
    """The "global batch only" form: the launch keeps the global batch and leaves micro and
    accumulation open; each rank splits it with the recipe's own micro batch (``rank/guard.py``),
    or refuses, naming the recipe's value, when that micro batch does not divide it."""
    world = nodes * gpus
    glob = micro * accum * world
    spec = LaunchSpec(
        recipe="r.py", topology=Topology(nodes=nodes, gpus=gpus), batch=Batch(global_batch=glob)
    )
    resolved = validate(spec)
    assert (resolved.batch.micro, resolved.batch.grad_accum, resolved.batch.global_batch) == (
        None,
        None,
        glob,
    )
    recipe = SimpleNamespace(per_device_train_batch_size=recipe_micro)
    if glob % (recipe_micro * world):
        with pytest.raises(SpecError, match=rf"micro batch {recipe_micro} is the recipe's"):
            accumulation_for_global_batch(recipe, resolved)
        return
    decided = accumulation_for_global_batch(recipe, resolved)
    assert decided is not None and product(recipe_micro, decided, world) == glob
    if recipe_micro == micro:
        assert decided == accum


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


def spec_on(procs: int, stage: int = 2, **batch: int) -> LaunchSpec:
    return LaunchSpec(
        recipe="sft.py", topology=Topology(procs=procs), zero=Zero(stage=stage), batch=Batch(**batch)
    )


def saved_batch(micro: int, accum: int, world: int) -> dict[str, int | None]:
    return {"world_size": world, "zero_stage": 2, "micro": micro, "grad_accum": accum}


SAVED = saved_batch(2, 2, 2)  # global 8


@pytest.mark.parametrize(
    ("saved", "procs", "split"),
    [
        ((2, 2, 2), 1, (2, 4)),
        ((2, 2, 2), 4, (2, 1)),
        ((2, 2, 2), 8, (1, 1)),  # scaling up past the accumulation: the micro batch shrinks
        ((8, 1, 2), 4, (4, 1)),  # the demo recipe (micro 8) moved to 4 processes
        ((8, 1, 2), 1, (8, 2)),  # ... and to 1: micro kept, accumulation doubled
        ((1, 8, 2), 1, (1, 16)),  # a recipe that hard-codes micro 1 x accumulation 8
        ((4, 1, 1), 2, (2, 1)),
        ((6, 1, 2), 4, (3, 1)),
        ((4, 3, 1), 2, (3, 2)),  # 6 per process: 3 is the largest micro dividing it, not above 4
    ],
)
def test_resume_without_batch_flags_keeps_the_global_batch_with_a_micro_batch_no_larger_than_saved(
    saved: tuple[int, int, int], procs: int, split: tuple[int, int]
) -> None:
    spec, chosen, problems = resume_spec(spec_on(procs), saved_batch(*saved))
    resolved = validate(spec)
    assert problems == [] and (resolved.batch.micro, resolved.batch.grad_accum) == split
    assert resolved.batch.global_batch == saved[0] * saved[1] * saved[2]
    assert chosen is not None and chosen.derived == ("micro", "grad_accum")


@given(micro=small, accum=small, world=st.integers(1, 16), new_world=st.integers(1, 64))
def test_resume_split_rule(micro: int, accum: int, world: int, new_world: int) -> None:
    """Kept global batch, micro never above the saved one and the largest that divides; refused
    exactly when the global batch does not split over the new world, naming world sizes that do."""
    glob = micro * accum * world
    _, chosen, problems = resume_spec(spec_on(new_world), saved_batch(micro, accum, world))
    if glob % new_world:
        assert chosen is None and len(problems) == 1 and f"world size {new_world}:" in problems[0]
        suggested = [int(w) for w in problems[0].split("e.g. ")[1].split(" or ")]
        assert suggested and all(glob % w == 0 for w in suggested)
        return
    assert chosen is not None and problems == []
    per_rank = glob // new_world
    assert chosen.micro * chosen.grad_accum == per_rank and chosen.micro <= micro
    assert all(per_rank % m for m in range(chosen.micro + 1, min(micro, per_rank) + 1))


def test_resume_on_a_world_size_that_cannot_keep_the_batch_names_the_ones_that_can() -> None:
    _, _, problems = resume_spec(spec_on(3), saved_batch(8, 1, 2))
    assert problems == [
        "world size 3: the run's global batch 16 (micro 8 x accumulation 1 x world 2) cannot be split evenly "
        "over 3 processes; resume on a world size dividing 16, e.g. 2 or 4"
    ]


@pytest.mark.parametrize(
    ("typed", "split", "derived"),
    [
        ({"micro": 1}, (1, 4), ("grad_accum",)),  # another split of the same global batch
        ({"grad_accum": 2}, (2, 2), ("micro",)),
        ({"micro": 4, "grad_accum": 1}, (4, 1), ()),
        ({"global_batch": 16}, (2, 4), ("micro", "grad_accum")),  # a deliberate change of the global batch
        ({"global_batch": 16, "micro": 4}, (4, 2), ("grad_accum",)),
    ],
)
def test_batch_flags_typed_on_resume_take_effect(
    typed: dict[str, int], split: tuple[int, int], derived: tuple[str, ...]
) -> None:
    spec, chosen, problems = resume_spec(spec_on(2, **typed), SAVED)
    resolved = validate(spec)
    assert problems == [] and (resolved.batch.micro, resolved.batch.grad_accum) == split
    assert chosen is not None and chosen.derived == derived and chosen.saved_global == 8
    change = batch_change(resolved.batch, chosen.saved_global, 12)
    if resolved.batch.global_batch == 8:
        assert change is None
    else:
        assert change is not None and "from 8 to 16 at step 12" in change and "skipped" in change


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (
            {"micro": 3},
            "--micro-batch 3: the run's global batch 8 on world size 2 is 4 samples per process, "
            "not divisible by 3; give a --micro-batch dividing 4 (1, 2, 4)",
        ),
        (
            {"grad_accum": 8},
            "--grad-accum 8: the run's global batch 8 on world size 2 is 4 samples per process",
        ),
        ({"global_batch": 9}, "world size 2: --global-batch 9 cannot be split evenly over 2 processes"),
        (
            {"micro": 2, "grad_accum": 2, "global_batch": 16},
            "--global-batch 16 != --micro-batch 2 x --grad-accum 2",
        ),
    ],
)
def test_batch_flags_typed_on_resume_that_cannot_work_are_refused(
    typed: dict[str, int], expected: str
) -> None:
    _, chosen, problems = resume_spec(spec_on(2, **typed), SAVED)
    assert chosen is None and len(problems) == 1 and problems[0].startswith(expected)


@pytest.mark.parametrize(
    "typed", [{"global_batch": 0}, {"global_batch": -4}, {"micro": 0}, {"grad_accum": -1}]
)
def test_a_batch_flag_below_one_on_resume_is_refused_by_the_scalar_rules(typed: dict[str, int]) -> None:
    spec, chosen, problems = resume_spec(spec_on(2, **typed), SAVED)
    assert chosen is None and problems == []
    with pytest.raises(SpecError, match=rf"--{'-'.join(next(iter(typed)).split('_'))}"):
        validate(spec)


@pytest.mark.parametrize(
    ("saved", "wanted", "ok"), [(1, 2, True), (2, 1, True), (2, 3, False), (0, 2, False)]
)
def test_resume_across_stages_only_where_the_layout_loads(saved: int, wanted: int, ok: bool) -> None:
    _, _, problems = resume_spec(spec_on(2, wanted), {**SAVED, "zero_stage": saved})
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
