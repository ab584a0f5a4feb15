"""When to save: ``--save-every auto`` turns measured costs into a checkpoint interval.

A hard failure (a dead node, a hang, the OOM killer) loses every step since the last complete
checkpoint; saving often costs throughput instead. With C the measured save (every rank, until the
completion marker is written), S the training step and p the share of time saving may cost
(``--save-overhead``, default 3 %), the interval k in steps is the smallest that keeps saving
within p:   C / (k S + C) <= p   =>   k = ceil(C (1 - p) / (p S)).
With ``--max-lost L`` a crash may lose at most the steps since the last save and the save in
progress:   k S + C <= L   =>   k <= floor((L - C) / S);   that bound wins over p when they
disagree (the overhead is then said). Each bound is kept against the step time that threatens it:
p against a fast step (the ranks pass the 25th percentile of the last 50), L against a slow one
(the 90th), so that steps that speed up or slow down after the choice keep both bounds.
k is never below 1 nor above the run's length. It is chosen
again after each save, from that save's cost. This is CheckFreq's rule (FAST '21) with the user's
loss bound; Young/Daly's sqrt(2 C MTBF) needs a failure rate, which a fine-tuning run rarely knows.

``--save-every 15m`` saves by time instead. Pure: the ranks measure, this decides.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from launcher.spec.launchspec import LaunchSpec

DEFAULT_OVERHEAD = 0.03
FIRST_SAVE_SECONDS = 60.0  # auto: the first save, which measures C, after this much training
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$")
SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def duration_seconds(text: str) -> float | None:
    """``90s``, ``15m``, ``1.5h`` in seconds; None when ``text`` is not one of those."""
    match = DURATION.match(text.lower())
    if match is None or float(match[1]) <= 0:
        return None
    return float(match[1]) * UNITS[match[2]]


def share(text: str) -> float | None:
    """``3%`` or ``0.03`` as a fraction strictly between 0 and 1; None otherwise."""
    match = SHARE.match(text)
    if match is None:
        return None
    value = float(match[1]) / (100.0 if match[2] else 1.0)
    return value if 0.0 < value < 1.0 else None


@dataclass(frozen=True)
class SavePolicy:
    """What the launch asked for: every ``seconds`` of training, or ``auto`` within the bounds."""

    auto: bool
    seconds: float | None = None  # by time
    overhead: float = DEFAULT_OVERHEAD
    max_lost: float | None = None

    def first_save_after(self) -> float:
        """Seconds of training before the first save (auto: it measures C; never past max_lost)."""
        if not self.auto:
            return float(self.seconds or 0.0)
        return min(FIRST_SAVE_SECONDS, self.max_lost / 2) if self.max_lost else FIRST_SAVE_SECONDS

    def describe(self) -> str:
        if not self.auto:
            return f"a checkpoint every {self.seconds:g} s of training"
        bound = f", losing at most {self.max_lost:g} s to a crash" if self.max_lost else ""
        return (
            f"checkpoint interval chosen from the measured save cost: at most {self.overhead:.1%} of the "
            f"time spent saving{bound}; first save after {self.first_save_after():g} s"
        )


def policy_of(spec: LaunchSpec) -> SavePolicy | None:
    """The spec's ``--save-every`` as a policy (validated before: ``rules/validate.py``)."""
    c = spec.checkpointing
    if c.save_every is None:
        return None
    if c.save_every.strip().lower() != "auto":
        return SavePolicy(auto=False, seconds=duration_seconds(c.save_every))
    overhead = share(c.save_overhead) if c.save_overhead is not None else None
    lost = duration_seconds(c.max_lost) if c.max_lost is not None else None
    return SavePolicy(auto=True, overhead=overhead or DEFAULT_OVERHEAD, max_lost=lost)


@dataclass(frozen=True)
class Interval:
    steps: int
    overhead: float  # the share of time saving costs at this interval
    lost: float  # the most training time a crash can lose at this interval, seconds
    limited_by: str  # "overhead", "max-lost", "run length" or "one step"


def interval(
    policy: SavePolicy, save: float, step: float, max_steps: int | None, slow_step: float | None = None
) -> Interval:
    """The interval in steps for a save of ``save`` s and a step of ``step`` s (both > 0). Each bound
    is kept against the step time that threatens it: the overhead against a fast step (``step``: the
    ranks pass a low quantile of the recent steps), the loss against a slow one (``slow_step``)."""
    step = max(step, 1e-6)
    slow = max(slow_step or step, step)
    k = max(1, math.ceil(save * (1 - policy.overhead) / (policy.overhead * step) - 1e-9))
    why = "overhead"
    if policy.max_lost is not None:
        most = math.floor((policy.max_lost - save) / slow + 1e-9)
        if most < k:
            k, why = max(1, most), "max-lost" if most >= 1 else "one step"
    if max_steps is not None and max_steps > 0 and k > max_steps:
        k, why = max_steps, "run length"
    return Interval(k, save / (k * step + save), k * slow + save, why)


def announce(found: Interval, save: float, step: float) -> str:
    said = (
        f"checkpoint every {found.steps} step{'s' * (found.steps > 1)}: a save takes {save:.1f} s and a "
        f"step {step:.2f} s, so saving costs {found.overhead:.1%} of the time and a crash loses at most "
        f"{found.lost:.0f} s"
    )
    if found.limited_by == "max-lost":
        said += " (--max-lost decides: more often than the overhead bound needs)"
    elif found.limited_by == "one step":
        said += " (a save takes longer than --max-lost allows: every step)"
    return said


def changed_much(before: int | None, now: int) -> bool:
    """Worth saying again: the first choice, or a change of a quarter or more."""
    return before is None or abs(now - before) >= max(1, 0.25 * before)
