"""What rank 0 writes down while the recipe trains: the phase it is in, each trainer log, the
progress. Read by the console, ``status``, ``plot`` and ``compare`` (``records/``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from launcher.records import metrics, rundir
from launcher.rules.batch import product


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


# ---------------------------------------------------------------- metrics


class MetricsLog:
    """Rank 0's record of training: each trainer log as a line of ``metrics.jsonl`` (with samples
    per second between logged steps) and ``progress.json`` (phase, step / total) kept current for
    the console's progress line and for ``ftlaunch status`` / ``plot``. Plain Python: the trainer
    callback below only forwards to it."""

    def __init__(self, attempt_dir: Path) -> None:
        self.attempt_dir = attempt_dir
        self.samples_per_step = 0
        self.last_log: tuple[int, float] | None = None
        self.last_write = 0.0

    def begin(self, args: Any, state: Any) -> None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.samples_per_step = product(
            args.per_device_train_batch_size, args.gradient_accumulation_steps, world
        )
        self.last_log = (state.global_step, time.time())
        self.progress(state, "training", first_step=state.global_step, started=time.time())

    def step_end(self, state: Any) -> None:
        if time.time() - self.last_write >= PROGRESS_EVERY or state.global_step >= state.max_steps:
            self.progress(state, "training")

    def log(self, state: Any, logs: Any) -> None:
        if not (state.is_world_process_zero and logs):
            return
        now = time.time()
        numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        record: dict[str, Any] = {"step": state.global_step, "time": now, **numbers}
        last = self.last_log
        if last is not None and state.global_step > last[0] and metrics.is_step_log(logs):
            steps, seconds = state.global_step - last[0], now - last[1]
            record["samples_per_second"] = round(steps * self.samples_per_step / seconds, 4)
            self.last_log = (state.global_step, now)
        rundir.append_json_line(self.attempt_dir / rundir.METRICS, record)

    def progress(self, state: Any, phase: str, **extra: Any) -> None:
        if state.is_world_process_zero:
            self.last_write = time.time()
            record = {"step": state.global_step, "max_steps": state.max_steps}
            say_phase(self.attempt_dir, phase, samples_per_step=self.samples_per_step, **record, **extra)


def install_recorder(attempt_dir: Path) -> None:
    """Every trainer the recipe builds gets a callback feeding a ``MetricsLog``. Added to
    transformers' default callbacks: the recipe is not touched."""
    import transformers.trainer
    from transformers import TrainerCallback

    class RecordMetrics(TrainerCallback):
        def __init__(self) -> None:
            self.record = MetricsLog(attempt_dir)

        def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            say_phase(attempt_dir, "preparing the trainer (DeepSpeed and optimizer set up at train())")

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.record.begin(args, state)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.record.step_end(state)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.record.progress(state, "finishing (saving the model, closing)")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            self.record.log(state, logs)

    callbacks: list[Any] = transformers.trainer.DEFAULT_CALLBACKS
    callbacks.append(RecordMetrics)


PROGRESS_EVERY = 0.5  # seconds between rewrites of progress.json during training


def say_phase(attempt_dir: Path, phase: str, **fields: Any) -> None:
    """Rank 0 tells the supervisor what it is doing (``progress.json``), so no minute is silent."""
    if rank() != 0:
        return
    path = attempt_dir / rundir.PROGRESS
    kept = rundir.read_json_quiet(path)  # when training began stays, whatever the phase now
    keep = {k: kept[k] for k in ("first_step", "started") if k in kept}
    rundir.write_json(path, {**keep, "phase": phase, "time": time.time(), **fields})
