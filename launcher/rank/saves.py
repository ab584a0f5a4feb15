"""Each rank times its checkpoint saves and the steps between; with ``--save-every`` it says when
the next save is due (the rule: ``rules/interval.py``). The ranks agree on the save through the
same per-step all-reduce as save-on-signal (``rank/saving.py``), so they save at the same step.

A save is timed from the step end that asked for it to the completion marker, on every rank; rank 0
appends each to the attempt's ``saves.jsonl`` (what ``status`` shows) and says on the console when
the interval it chose changes much.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from launcher.records import rundir
from launcher.rules.interval import SavePolicy, announce, changed_much, interval

RECENT_SAVES = 3  # the save cost the interval is chosen from: the slowest of the last this many
RECENT_STEPS = 50  # the step times the interval is chosen from: the last this many
FAST, SLOW = (
    0.25,
    0.9,
)  # quantiles of them: the overhead bound is kept against a fast step, the loss against a slow one


def quantile(values: deque[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank); 0 when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Saves:
    def __init__(self, policy: SavePolicy | None, attempt_dir: Path) -> None:
        self.policy, self.attempt_dir = policy, attempt_dir
        self.active = False  # --save-every given and the recipe kept no schedule of its own
        self.max_steps: int | None = None
        self.steps: deque[float] = deque(maxlen=RECENT_STEPS)
        self.saves: deque[float] = deque(maxlen=RECENT_SAVES)
        now = time.monotonic()
        self.began = self.last_step = self.last_save = now
        self.steps_since = 0
        self.chosen: int | None = None  # the interval in steps, once a save was measured (auto)
        self.saving_since: float | None = None
        self.warm = False  # past the attempt's first step

    def begin(self, args: Any, state: Any) -> None:
        strategy = getattr(args.save_strategy, "value", args.save_strategy)
        self.active = self.policy is not None and strategy == "no"
        self.max_steps = int(state.max_steps) if state.max_steps and state.max_steps > 0 else None
        self.began = self.last_step = self.last_save = time.monotonic()

    def step_ended(self) -> None:
        now = time.monotonic()
        if self.warm:  # the first step's warm-up is no step time
            self.steps.append(now - self.last_step)
        self.warm = True
        self.last_step = now
        self.steps_since += 1

    def due(self) -> bool:
        """This rank's view; the ranks then agree (any rank due: all save)."""
        policy = self.policy
        if not self.active or policy is None:
            return False
        now = time.monotonic()
        if not policy.auto:
            return now - self.last_save >= float(policy.seconds or 0.0)
        if self.chosen is None:
            return now - self.began >= policy.first_save_after()
        return self.steps_since >= self.chosen

    def save_started(self) -> None:
        self.saving_since = time.monotonic()

    def save_ended(self, step: int, world_zero: bool) -> None:
        """After the completion marker: measure, choose the next interval (auto), record."""
        now = time.monotonic()
        took = now - (self.saving_since if self.saving_since is not None else now)
        step_seconds, slow = quantile(self.steps, FAST), quantile(self.steps, SLOW)
        before = self.chosen
        self.saves.append(took)
        if self.active and self.policy is not None and self.policy.auto and step_seconds > 0:
            cost = max(self.saves)  # the slowest recent save: a noisy cost neither swings nor breaks p
            found = interval(self.policy, cost, step_seconds, self.max_steps, slow)
            self.chosen = found.steps
            if world_zero and changed_much(before, found.steps):
                print(f"ftlaunch: {announce(found, cost, step_seconds)}", file=sys.stderr, flush=True)
        if world_zero:
            record = {
                "step": step,
                "seconds": round(took, 3),
                "steps_since": self.steps_since,
                "step_seconds": round(step_seconds, 4),
                "slow_step_seconds": round(slow, 4),
                "interval": self.chosen,
                "mode": self.mode(),
                "time": time.time(),
            }
            rundir.append_json_line(self.attempt_dir / rundir.SAVES, record)
        self.steps_since, self.saving_since = 0, None
        self.last_step = self.last_save = now  # a save is not a step

    def mode(self) -> str:
        if not self.active or self.policy is None:
            return "save_steps"
        return "auto" if self.policy.auto else f"every {self.policy.seconds:g} s"
