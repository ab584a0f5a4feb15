"""What runs on every rank around the user's unmodified recipe.

Before the recipe's trainer arguments take effect, the guard makes them agree with the spec: it
wraps ``TrainingArguments.__post_init__``, which every TRL config (SFT, DPO, GRPO, ...) reaches
before transformers builds its DeepSpeed config. Values the recipe left at their defaults are
filled from the spec; a value the recipe set that conflicts with an explicit launch flag stops the
run there, before the model is loaded (provided the recipe builds its config first, as TRL scripts
do). The effective numbers are logged and recorded; after the recipe returns, a completion marker
per rank tells the launcher that training finished, whatever the exit code at shutdown.
"""

from __future__ import annotations

import datetime
import gc
import os
import runpy
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from launcher import protocol, redact
from launcher.errors import SpecError
from launcher.rank import opguard, saving
from launcher.rank.guard import install_guard
from launcher.rank.heartbeat import install_heartbeat, record_failure
from launcher.rank.recorder import install_recorder, rank, say_phase
from launcher.records import rundir
from launcher.render import DECIDED_FILE, TRAINER_FILE
from launcher.spec.decided import Resolved
from launcher.spec.faults import process_group_timeout


def main(argv: Sequence[str] | None = None) -> int:
    end_with_the_launch()
    attempt_dir, recipe, recipe_args = parse_args(sys.argv[1:] if argv is None else argv)
    refuse_ended_attempt(attempt_dir)
    os.environ[protocol.ATTEMPT_ENV] = attempt_dir.name  # the recipe may read which attempt it is
    say_phase(attempt_dir, "loading libraries")
    decided = attempt_dir / DECIDED_FILE
    resolved = Resolved.from_dict(rundir.read_json(decided), str(decided))
    overrides = rundir.read_json(attempt_dir / TRAINER_FILE)
    if resolved.uses_deepspeed:
        opguard.guard_builds_once_loaded()
    init_deepspeed_on_cpu(resolved)
    install_guard(resolved, overrides, attempt_dir)
    install_recorder(attempt_dir)
    saving.install(resolved, attempt_dir)
    install_heartbeat(attempt_dir)
    freeze_the_libraries()
    say_phase(attempt_dir, "running the recipe (parsing its arguments)")
    try:
        run_recipe(recipe, redact.reveal(recipe_args, os.environ))
    except SpecError as err:
        return refuse(attempt_dir, err)
    except Exception as err:
        record_failure(attempt_dir, err)
        raise
    mark_done(attempt_dir)
    close_process_group()
    return 0


USAGE = f"usage: python -m {protocol.ENTRY_MODULE} --attempt-dir DIR RECIPE [ARGS...]"


def parse_args(argv: Sequence[str]) -> tuple[Path, str, list[str]]:
    """``--attempt-dir DIR RECIPE ARGS...``, split by position: argparse would drop a ``--`` or
    take a recipe argument for one of ours, and the recipe must get its arguments verbatim."""
    if len(argv) < 3 or argv[0] != "--attempt-dir":
        sys.exit(f"{USAGE} (the launcher writes this command; run ftlaunch instead)")
    return Path(argv[1]), argv[2], list(argv[3:])


def end_with_the_launch() -> None:
    """A rank ends when its torchrun agent dies, as the agent ends when the supervisor dies: nothing
    trains on unattended after ftlaunch is killed outright. The parent is checked after asking,
    since it may have died before: then we were adopted by the supervisor (a subreaper) or init."""
    parent = os.getppid()
    protocol.end_with_parent()
    supervisor = os.environ.get(protocol.SUPERVISOR_PID, "")
    if parent == 1 or (supervisor.isdigit() and (parent == int(supervisor) or not exists(int(supervisor)))):
        print("ftlaunch: this rank's launcher is gone; stopping", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)


def refuse_ended_attempt(attempt_dir: Path) -> None:
    """Never train into an attempt that already ran (re-running its ``command.sh`` by hand would
    rewrite its checkpoints and markers under a status that describes the old run)."""
    try:
        state = rundir.read_json(attempt_dir / rundir.STATUS).get("state")
    except (OSError, ValueError, AttributeError):
        state = None
    if state in rundir.ENDED or (attempt_dir / rundir.DONE / f"rank{rank()}.json").exists():
        if rank() == 0:
            print(
                f"ftlaunch: {attempt_dir} already ran ({state or 'completed'}); its command.sh records what "
                f"ran and does not run again. Continue it with: ftlaunch resume {attempt_dir.parent.parent}",
                file=sys.stderr,
            )
        sys.exit(2)


def exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def init_deepspeed_on_cpu(resolved: Resolved) -> None:
    """With ``use_cpu=True`` accelerate never initialises ``deepspeed.comm``; ZeRO-3's ``zero.Init``
    then sees a world size of 1 and fails DeepSpeed's batch assertion. Initialise it ourselves.

    Before that, mark DeepSpeed's ``deepspeed_shm_comm`` op unavailable: on CPU it serves only
    inference all-reduce, yet its first use compiles it for minutes; without it training is the same
    (cpu-facts: ZeRO-2/3 trained from an empty extensions cache with no compile at all)."""
    if resolved.uses_deepspeed and resolved.spec.topology.on_cpu:
        import deepspeed
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        seconds = process_group_timeout(resolved.spec)
        deepspeed.init_distributed(dist_backend="gloo", timeout=datetime.timedelta(seconds=seconds))


def freeze_the_libraries() -> None:
    """Keep the garbage collector off the objects of what is imported so far (torch, transformers
    with its trainer, DeepSpeed: millions of them), which live until exit anyway. Interpreter exit
    otherwise walks them in several full collections as it tears the modules down: 1.7 s per rank
    measured here, 0.2 s frozen (bench/RESULTS.md); full collections during training skip them too.
    Called before the recipe runs, so nothing the recipe creates is frozen: its objects (models it
    deletes, files it leaves open) are collected and finalized exactly as without ftlaunch."""
    gc.freeze()


def run_recipe(recipe: str, args: Sequence[str]) -> None:
    """Run the script exactly as ``python recipe.py args`` would, in this process."""
    sys.argv = [recipe, *args]
    sys.path.insert(0, str(Path(recipe).resolve().parent))
    try:
        runpy.run_path(recipe, run_name="__main__")
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            raise


def refuse(attempt_dir: Path, err: SpecError) -> int:
    """Every rank records why (the same text, written atomically): the first rank to refuse ends, and
    torchrun then stops the others, perhaps before rank 0 got here. The supervisor leads its verdict
    with it (printing it here as well would show it twice); rank 0 prints it when run by hand."""
    text = err.render() + "\n"
    rundir.write_atomic(attempt_dir / rundir.ENTRY_ERROR, text)
    if rank() == 0 and protocol.SUPERVISOR_PID not in os.environ:
        print(text, file=sys.stderr, end="", flush=True)
    return 2


# ---------------------------------------------------------------- completion


def mark_done(attempt_dir: Path) -> None:
    rundir.write_json(
        attempt_dir / rundir.DONE / f"rank{rank()}.json",
        {
            "rank": rank(),
            "world_size": seen_world_size(),
            "finished": time.time(),
            "preempted": (attempt_dir / rundir.PREEMPTED).exists(),
        },
    )


def seen_world_size() -> int:
    """The world size the process group really had, not what the flags claimed."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return int(os.environ.get("WORLD_SIZE", "1"))


def close_process_group() -> None:
    """Tear the process group down ourselves; leaving it to interpreter exit can abort a rank."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
