"""Each rank's sign of life, written from the training loop itself.

A rank stuck in a collective, a dead-locked data loader or a stopped process stops writing; that
is how the node supervisor tells a hung rank from a slow one (``run/watchdog.py``). Every rank
also records the slowest step and the slowest save or evaluation it has seen, so the supervisor's
allowance follows the run's own pace. On ``protocol.STACK_SIGNAL`` a rank writes every thread's
Python stack (faulthandler: it works while the main thread is blocked inside a C call). The
recipe's own exception is recorded with its step: the restart rule needs to tell an error that
repeats from a hang or a lost rank.
"""

from __future__ import annotations

import faulthandler
import os
import time
from pathlib import Path
from typing import IO, Any

from launcher import protocol
from launcher.rank.recorder import rank
from launcher.records import rundir

BEAT_EVERY = 1.0  # at most this long between rewrites; a new phase is written at once
STEP_GAP = 0.2  # a new step is written unless the last write is younger (fast steps: no file storm)
CURRENT: Heartbeat | None = None
_STACK_FILE: list[IO[str]] = []  # kept open for the life of the process: faulthandler writes to it


class Heartbeat:
    """The rank's phase (``starting`` until the trainer starts, then ``first step``, ``training``,
    ``saving``, ``evaluating``, ``finishing``), its step and when it last moved."""

    def __init__(self, attempt_dir: Path) -> None:
        self.path = attempt_dir / rundir.HEARTBEATS / f"rank{rank()}.json"
        self.phase = "starting"
        self.phase_since = time.time()
        self.step: int | None = None
        self.last_step_end: float | None = None
        self.slowest_step = 0.0
        self.slowest_long = 0.0  # the slowest save or evaluation
        self.last_write = 0.0

    def train_begin(self, step: int) -> None:
        self.step, self.last_step_end = step, None
        self.enter("first step")

    def step_end(self, step: int, saving: bool, evaluating: bool) -> None:
        now = time.time()
        if self.last_step_end is not None and step > (self.step or 0):
            self.slowest_step = max(self.slowest_step, (now - self.last_step_end) / (step - (self.step or 0)))
        self.step, self.last_step_end = step, now
        self.enter("evaluating" if evaluating else "saving" if saving else "training", stepped=True)

    def long_phase_end(self, still_saving: bool) -> None:
        """A save or an evaluation is over: its time is the measure of the next one."""
        now = time.time()
        self.slowest_long = max(self.slowest_long, now - self.phase_since)
        self.last_step_end = now  # the next step's time starts here, not at the last step's end
        self.enter("saving" if still_saving else "training")

    def enter(self, phase: str, stepped: bool = False) -> None:
        if phase != self.phase:
            self.phase, self.phase_since, self.last_write = phase, time.time(), 0.0
        since = time.time() - self.last_write
        if since >= BEAT_EVERY or (stepped and since >= STEP_GAP):
            self.write()

    def write(self) -> None:
        self.last_write = time.time()
        rundir.write_json(
            self.path,
            {
                "rank": rank(),
                "node": int(os.environ.get("GROUP_RANK", "0")),
                "pid": os.getpid(),
                "phase": self.phase,
                "step": self.step,
                "time": self.last_write,
                "slowest_step": round(self.slowest_step, 3),
                "slowest_long": round(self.slowest_long, 3),
            },
            durable=False,
        )


def install_heartbeat(attempt_dir: Path) -> None:
    """Every trainer the recipe builds beats through a callback; each rank answers the supervisor's
    request for its stack. Installed last, so a save that another callback asks for at a step is seen."""
    global CURRENT
    import transformers.trainer
    from transformers import TrainerCallback

    heartbeat = CURRENT = Heartbeat(attempt_dir)
    heartbeat.path.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.write()
    install_stack_dumps(attempt_dir)

    class Beat(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            heartbeat.train_begin(state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            heartbeat.step_end(state.global_step, control.should_save, control.should_evaluate)

        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            heartbeat.long_phase_end(still_saving=control.should_save)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            heartbeat.long_phase_end(still_saving=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            heartbeat.enter("finishing")

    callbacks: list[Any] = transformers.trainer.DEFAULT_CALLBACKS
    callbacks.append(Beat)


def install_stack_dumps(attempt_dir: Path) -> None:
    path = attempt_dir / rundir.LOGS / rundir.STACKS / f"rank{rank()}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a")  # noqa: SIM115 (open until the process ends: the handler writes to it)
    _STACK_FILE.append(stream)
    faulthandler.register(protocol.STACK_SIGNAL, file=stream, all_threads=True)


def record_failure(attempt_dir: Path, error: BaseException) -> None:
    """The recipe raised: what, and at which step (a restart that meets it again at the same step
    stops retrying: it is the recipe's, not the machine's)."""
    step = CURRENT.step if CURRENT is not None else None
    what = f"{type(error).__name__}: {error}"[:500]
    record = {"rank": rank(), "step": step, "error": what, "time": time.time()}
    path = attempt_dir / rundir.FAILURES / f"rank{rank()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_json(path, record)
