"""``jobs/sft.py`` with one fault, chosen by ``FTLAUNCH_TEST_FAULT``, for the hard-fault tests:

- ``raise@STEP``: every attempt raises at that step, as a bug in a recipe would;
- ``slow_save@SECONDS``: the first save of each attempt takes that much longer (healthy, slow);
- ``save_sleep@A,B,N``: every save takes A seconds longer, from the N-th save of an attempt on B
  (a save whose cost changes, as under disk pressure).

The callback goes right after transformers' flow callback, before any other, so a slow save is
still a save to everything that watches the run."""

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))

import sft
import transformers.trainer
from transformers import TrainerCallback

KIND, _, VALUE = os.environ.get("FTLAUNCH_TEST_FAULT", "").partition("@")


class Fault(TrainerCallback):
    slept = False
    saves = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if KIND == "raise" and state.global_step == int(VALUE):
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
