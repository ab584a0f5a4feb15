"""The numbers of the hang rule, decided once: the node supervisor's watchdog applies them
(``run/watchdog.py``), the trainer's process group timeout is set from them (``render/trainer.py``)
and the dry run states them.

With T the hang timeout, a training step may take max(T, 10 x the slowest step seen); the first
step, a save or an evaluation max(4T, 10 x the slowest of those seen). The process group's own
timeout (gloo, NCCL) is the second line: never shorter than transformers' 30 minutes, and longer
than 4T, so that the watchdog, which saves every rank's stack, always acts first.
"""

from __future__ import annotations

from launcher.spec.launchspec import LaunchSpec

DEFAULT_HANG_TIMEOUT = 300.0  # seconds
STEP_FACTOR = 10  # a step may take this many times the slowest step seen
LONG_FACTOR = 4  # the first step, a save or an evaluation get this many times T
TRAINER_PG_TIMEOUT = 1800  # transformers' TrainingArguments.ddp_timeout default, seconds
PG_MARGIN = 300  # seconds the process group waits beyond the watchdog's longest allowance


def hang_timeout(spec: LaunchSpec) -> float:
    return spec.faults.hang_timeout or DEFAULT_HANG_TIMEOUT


def process_group_timeout(spec: LaunchSpec) -> int:
    """Seconds a collective may wait before gloo or NCCL gives up."""
    return max(TRAINER_PG_TIMEOUT, int(LONG_FACTOR * hang_timeout(spec)) + PG_MARGIN)


def describe(spec: LaunchSpec) -> str:
    t = hang_timeout(spec)
    slurm = spec.slurm.enabled
    restarts = 0 if slurm and spec.slurm.no_requeue else spec.faults.max_restarts
    again = "the job requeues itself " if slurm else "it restarts "
    go_on = (
        f"{again}up to {restarts} time(s), from the latest complete checkpoint" if restarts else "no restart"
    )
    return (
        f"a rank making no progress for {t:g} s in a step ({LONG_FACTOR * t:g} s in the first step, a "
        f"save or an evaluation; more once slower ones are measured) ends the attempt"
        f"{'; a node that dies or ends badly ends the others within seconds' if slurm else ''}; "
        f"{go_on}; "
        f"process group timeout {process_group_timeout(spec)} s"
    )
