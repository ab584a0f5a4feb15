"""The checkpoint-interval rule (``rules/interval.py``) and its flags; the real thing (ranks that
time their saves and agree on the interval) is in e2e/test_save_interval.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.rules.interval import SavePolicy, duration_seconds, interval, share

AUTO = SavePolicy(auto=True)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("15m", 900.0), ("1.5h", 5400.0), (" 20M ", 1200.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "soon", "0s", "-5m", "15 minutes", "1d"])
def test_not_durations(text: str) -> None:
    assert duration_seconds(text) is None


@pytest.mark.parametrize(("text", "value"), [("3%", 0.03), ("0.03", 0.03), ("50 %", 0.5), ("99.5%", 0.995)])
def test_shares(text: str, value: float) -> None:
    assert share(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["0", "0%", "100%", "150%", "1", "1.5", "-3%", "three"])
def test_not_shares(text: str) -> None:
    assert share(text) is None


def test_a_worked_example() -> None:
    """A 10 s save, 1 s steps, 3 %: every 324 steps (10 x 0.97 / 0.03 = 323.3), costing 2.99 %."""
    found = interval(AUTO, save=10.0, step=1.0, max_steps=None)
    assert (found.steps, found.limited_by) == (324, "overhead")
    assert found.overhead == pytest.approx(10 / 334) and found.overhead <= 0.03
    # A crash may lose the steps since the last save and the save in progress.
    assert found.lost == pytest.approx(334.0)


def test_max_lost_wins_and_the_run_length_caps() -> None:
    bounded = SavePolicy(auto=True, max_lost=120.0)
    found = interval(bounded, save=10.0, step=1.0, max_steps=None)
    assert (found.steps, found.limited_by, found.lost) == (110, "max-lost", 120.0)
    assert interval(SavePolicy(auto=True, max_lost=5.0), 10.0, 1.0, None).steps == 1  # every step
    assert interval(AUTO, 10.0, 1.0, max_steps=50).steps == 50


@given(
    save=st.floats(0.01, 3600),
    step=st.floats(0.001, 600),
    overhead=st.floats(0.001, 0.9),
    max_lost=st.one_of(st.none(), st.floats(1, 86400)),
    max_steps=st.one_of(st.none(), st.integers(1, 10**6)),
    slower=st.floats(1.0, 3.0),
)
def test_the_interval_is_the_smallest_within_the_overhead_unless_a_bound_says_otherwise(
    save: float, step: float, overhead: float, max_lost: float | None, max_steps: int | None, slower: float
) -> None:
    """``step`` the fast steps (the overhead's threat), ``step x slower`` the slow ones (the loss's)."""
    policy = SavePolicy(auto=True, overhead=overhead, max_lost=max_lost)
    found = interval(policy, save, step, max_steps, slow_step=step * slower)
    k = found.steps
    assert k >= 1 and (max_steps is None or k <= max_steps)
    within = save / (k * step + save) <= overhead * (1 + 1e-9)
    if found.limited_by == "overhead":
        assert within
        assert k == 1 or save / ((k - 1) * step + save) > overhead * (1 - 1e-9), "and the smallest such"
    if max_lost is not None and k > 1:
        assert k * step * slower + save <= max_lost * (1 + 1e-9), "a crash never loses more than --max-lost"
    assert found.overhead == pytest.approx(save / (k * step + save))
    assert not math.isnan(found.lost)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--save-every", "often"], "--save-every often: use auto, or a time of training"),
        (
            ["--save-every", "auto", "--save-overhead", "0"],
            "--save-overhead 0: a share above 0 and below 100%",
        ),
        (["--save-every", "auto", "--save-overhead", "150%"], "--save-overhead 150%: a share above 0"),
        (["--save-every", "auto", "--max-lost", "soon"], "--max-lost soon: use a time such as"),
        (["--save-every", "auto", "--save-steps", "10"], "--save-steps 10 and --save-every auto both decide"),
        (["--max-lost", "20m"], "--max-lost 20m only applies with --save-every auto"),
    ],
)
def test_bad_save_flags_are_refused_with_one_line(flags: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "--dry-run", "--procs", "2", *flags, "jobs/sft.py"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_rank_says_a_save_is_due_by_time_or_at_the_chosen_interval(tmp_path: Path) -> None:
    """``rank/saves.py`` without a trainer: by time (every 0.2 s), and with
    ``auto`` after its first save at the interval the rule chose from what was measured."""
    import time
    from types import SimpleNamespace

    from launcher.rank.saves import Saves

    args, state = SimpleNamespace(save_strategy="no"), SimpleNamespace(max_steps=1000)
    by_time = Saves(SavePolicy(auto=False, seconds=0.2), tmp_path)
    by_time.begin(args, state)
    by_time.step_ended()
    assert not by_time.due()
    time.sleep(0.25)
    assert by_time.due()

    auto = Saves(SavePolicy(auto=True, overhead=0.5, max_lost=0.2), tmp_path)  # first save after 0.1 s
    auto.begin(args, state)
    for _ in range(4):
        time.sleep(0.02)
        auto.step_ended()
    time.sleep(0.1)
    assert auto.due()
    auto.save_started()
    time.sleep(0.05)
    auto.save_ended(step=4, world_zero=True)
    assert auto.chosen is not None and auto.chosen >= 1 and not auto.due()
    for _ in range(auto.chosen):
        auto.step_ended()
    assert auto.due()
    (record,) = [json.loads(line) for line in (tmp_path / "saves.jsonl").read_text().splitlines()]
    assert record["mode"] == "auto" and record["interval"] == auto.chosen and record["seconds"] >= 0.05

    kept = Saves(SavePolicy(auto=True), tmp_path)  # the recipe kept its own schedule
    kept.begin(SimpleNamespace(save_strategy="steps"), state)
    assert not kept.active and not kept.due()
