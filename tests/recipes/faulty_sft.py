"""``jobs/sft.py`` with faults chosen by ``FTLAUNCH_TEST_FAULT`` (several joined by ``;``), for the
hard-fault tests:

- ``raise@STEP``: every attempt raises at that step, as a bug in a recipe would; ``raise@STEP,A``:
  from the run's A-th attempt on;
- ``kill@STEP,A``: the rank kills itself (SIGKILL) at that step in the run's first A attempts
  (a machine fault: a killed rank, or a node's OOM killer);
- ``slow_save@SECONDS``: the first save of each attempt takes that much longer (healthy, slow);
- ``save_sleep@A,B,N``: every save takes A seconds longer, from the N-th save of an attempt on B
  (a save whose cost changes, as under disk pressure).

The callback goes right after transformers' flow callback, before any other, so a slow save is
still a save to everything that watches the run."""

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))

import sft
import transformers.trainer
from transformers import TrainerCallback

FAULTS = dict(f.partition("@")[::2] for f in os.environ.get("FTLAUNCH_TEST_FAULT", "").split(";") if f)
KIND, VALUE = next(iter(FAULTS.items()), ("", ""))
ATTEMPT = int(os.environ["FTLAUNCH_ATTEMPT"])  # the rank's entry sets it
print(f"faulty_sft: attempt {ATTEMPT} faults {FAULTS}", file=sys.stderr, flush=True)  # said in the log


def at(fault: str, step: int) -> bool:
    """Whether ``fault`` (``STEP`` or ``STEP,A``) strikes at this step of this attempt."""
    at_step, _, attempts = FAULTS[fault].partition(",")
    if step != int(at_step):
        return False
    if fault == "kill":
        return int(attempts) >= ATTEMPT
    return int(attempts or 1) <= ATTEMPT


class Fault(TrainerCallback):
    slept = False
    saves = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if "kill" in FAULTS and at("kill", state.global_step):
            os.kill(os.getpid(), signal.SIGKILL)
        if "raise" in FAULTS and at("raise", state.global_step):
            raise ValueError(f"a bug in the recipe at step {state.global_step}")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if KIND == "slow_save" and not Fault.slept:
            Fault.slept = True
            time.sleep(float(VALUE))
        if KIND == "save_sleep":
            before, after, from_save = VALUE.split(",")
            Fault.saves += 1
            time.sleep(float(after if Fault.saves >= int(from_save) else before))


transformers.trainer.DEFAULT_CALLBACKS.insert(1, Fault)
sft.main()
