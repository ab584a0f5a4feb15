"""The progress line: step / total, the key metrics, speed, elapsed and ETA, from what rank 0
records (``progress.json``, ``metrics.jsonl``). Pure: ``describe(now)`` only formats."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from launcher.records import metrics
from launcher.run.lines import compact, format_seconds


@dataclass
class Progress:
    """The run's progress as rank 0 records it; what the progress line shows."""

    phase: str = "starting the processes"
    phase_since: float = field(default_factory=time.time)
    step: int | None = None
    max_steps: int | None = None
    first: tuple[int, float] | None = None  # (step, time) when training began
    step_time: float = 0.0  # when ``step`` was reached
    samples_per_step: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    tokens: list[tuple[float, float]] = field(default_factory=list)  # (time, num_tokens) of logs
    detail: str = ""  # the newest hidden progress bar: what is being loaded or written

    def describe(self, now: float) -> str:
        """One line: step / total, loss, learning rate, speed, elapsed, ETA; the phase before that."""
        if self.step is None or self.first is None:
            since = format_seconds(now - self.phase_since)
            return f"{self.phase} ({since}){f' · {self.detail}' if self.detail else ''}"
        parts = [f"step {self.step}/{self.max_steps}" if self.max_steps else f"step {self.step}"]
        parts += self.shown_metrics()
        done, elapsed = self.step - self.first[0], now - self.first[1]
        stepping = self.step_time - self.first[1]  # rates count the steps' time, not what follows
        if done > 0 and stepping > 0:
            if self.samples_per_step:
                parts.append(f"{compact(done * self.samples_per_step / stepping)} samples/s")
            tokens = self.tokens_per_second()
            if tokens:
                parts.append(f"{compact(tokens)} tokens/s")
        parts.append(f"{format_seconds(elapsed)} elapsed")
        if done > 0 and stepping > 0 and self.max_steps and self.step < self.max_steps:
            parts.append(f"ETA {format_seconds((self.max_steps - self.step) * stepping / done)}")
        if self.phase != "training":
            parts.append(self.phase)
        return " · ".join(parts)

    def shown_metrics(self) -> list[str]:
        """The loss, the trainer's key metric when that is another (GRPO's reward, DPO's reward
        margin), and the learning rate."""
        key = metrics.key_metric(self.metrics)
        shown = [k for k in dict.fromkeys(("loss", key)) if k is not None]
        parts = [f"{k} {v:.4g}" for k in shown if (v := metrics.number(self.metrics.get(k))) is not None]
        lr = metrics.number(self.metrics.get("learning_rate"))
        return parts + ([f"lr {lr:.3g}"] if lr is not None else [])

    def tokens_per_second(self) -> float | None:
        if len(self.tokens) < 2:
            return None
        (t0, n0), (t1, n1) = self.tokens[0], self.tokens[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None
