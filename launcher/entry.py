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

import dataclasses
import gc
import os
import runpy
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher import metrics, node, opcache, redact, rundir, saving
from launcher.errors import SpecError
from launcher.render import DECIDED_FILE, TRAINER_FILE
from launcher.render.trainer import PREFERRED
from launcher.rules import Resolved, resolve_batch

# Trainer argument -> the launch flag that decides it, for error messages.
FLAG_OF = {
    "per_device_train_batch_size": "--micro-batch",
    "gradient_accumulation_steps": "--grad-accum",
    "bf16": "--precision",
    "fp16": "--precision",
    "max_grad_norm": "--max-grad-norm",
    "save_strategy": "--save-steps",
    "save_steps": "--save-steps",
    "use_cpu": "--procs",
}
# Where the recipe's own value never conflicts: the launch's value is simply required.
ALWAYS_FILL = {"use_cpu", "save_strategy"}
DEFAULT_OUTPUT_DIRS = (None, "trainer_output")


def main(argv: Sequence[str] | None = None) -> int:
    end_with_the_launch()
    attempt_dir, recipe, recipe_args = parse_args(sys.argv[1:] if argv is None else argv)
    refuse_ended_attempt(attempt_dir)
    say_phase(attempt_dir, "loading libraries")
    decided = attempt_dir / DECIDED_FILE
    resolved = Resolved.from_dict(rundir.read_json(decided), str(decided))
    overrides = rundir.read_json(attempt_dir / TRAINER_FILE)
    if resolved.uses_deepspeed:
        opcache.guard_builds_once_loaded()
    init_deepspeed_on_cpu(resolved)
    install_guard(resolved, overrides, attempt_dir)
    install_recorder(attempt_dir)
    saving.install(resolved, attempt_dir)
    freeze_the_libraries()
    say_phase(attempt_dir, "running the recipe (parsing its arguments)")
    try:
        run_recipe(recipe, redact.reveal(recipe_args, os.environ))
    except SpecError as err:
        return refuse(attempt_dir, err)
    mark_done(attempt_dir)
    close_process_group()
    return 0


USAGE = "usage: python -m launcher.entry --attempt-dir DIR RECIPE [ARGS...]"


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
    node.end_with_parent()
    supervisor = os.environ.get(node.SUPERVISOR_PID, "")
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
        deepspeed.init_distributed(dist_backend="gloo")


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
    if rank() == 0 and node.SUPERVISOR_PID not in os.environ:
        print(text, file=sys.stderr, end="", flush=True)
    return 2


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


# ---------------------------------------------------------------- the guard


def install_guard(resolved: Resolved, overrides: dict[str, Any], attempt_dir: Path) -> None:
    from transformers import TrainingArguments

    original = TrainingArguments.__post_init__

    def guarded_post_init(self: Any) -> None:
        reconcile(self, resolved, overrides, attempt_dir)
        original(self)  # type: ignore[no-untyped-call]
        record_effective(self, resolved, attempt_dir)
        say_phase(attempt_dir, "loading the model and data")

    TrainingArguments.__post_init__ = guarded_post_init  # type: ignore[method-assign]


def reconcile(args: Any, resolved: Resolved, overrides: dict[str, Any], attempt_dir: Path) -> None:
    """Fill the spec's values into ``args`` or refuse conflicting ones; all conflicts in one error."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != resolved.world_size:
        raise SpecError(
            [
                f"this run has {world} processes but the spec says world size "
                f"{resolved.world_size}; launch it with ftlaunch, not by hand"
            ]
        )
    defaults = field_defaults(type(args))
    wanted = dict(overrides)
    flags = dict(FLAG_OF)
    derived = accumulation_for_global_batch(args, resolved)
    if derived is not None:
        wanted["gradient_accumulation_steps"] = derived
        flags["gradient_accumulation_steps"] = f"--global-batch {resolved.batch.global_batch}"
    conflicts = []
    replaced = derived_on_resume(resolved)
    for key, want in wanted.items():
        have = getattr(args, key)
        if have == want or key in ALWAYS_FILL or is_default(key, have, args, defaults):
            setattr(args, key, want)
            continue
        if key in replaced:
            announce_replaced(key, have, want, resolved)
            setattr(args, key, want)
            continue
        if key in PREFERRED:
            keep_recipes_choice(key, have, want)
            continue
        conflicts.append(
            f"the recipe sets {key}={have!r} but the launch asks for {flags[key]} "
            f"({key}={want!r}); drop {flags[key].split()[0]} to keep the recipe's value, or remove "
            f"{key} from the recipe to let the launch decide"
        )
    if conflicts:
        raise SpecError(conflicts)
    if getattr(args, "output_dir", None) in DEFAULT_OUTPUT_DIRS:
        args.output_dir = str(rundir.checkpoints_of(attempt_dir))
    if resolved.resume is None:
        refuse_used_output_dir(Path(args.output_dir), attempt_dir)


# The spec's batch fields under the trainer's names (``render.trainer`` writes them so).
TRAINER_KEY_OF = {"micro": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps"}


def derived_on_resume(resolved: Resolved) -> set[str]:
    """Trainer arguments the launch chose to keep a resumed run's global batch: they replace the
    recipe's own values, hard-coded or not (typed flags are held against the recipe instead)."""
    return {TRAINER_KEY_OF[name] for name in resolved.resume.derived} if resolved.resume else set()


def announce_replaced(key: str, have: Any, want: Any, resolved: Resolved) -> None:
    if rank() == 0:
        world = resolved.world_size
        print(
            f"ftlaunch: the recipe's {key}={have!r} is replaced by {want!r} for this attempt to keep the "
            f"global batch {resolved.batch.global_batch} of the run on {world} process{'es' * (world > 1)}",
            file=sys.stderr,
            flush=True,
        )


def keep_recipes_choice(key: str, have: Any, want: Any) -> None:
    """ftlaunch's preference gives way to the recipe's explicit choice; rank 0 says what it costs."""
    if rank() == 0:
        print(
            f"ftlaunch: the recipe's {key}={str(getattr(have, 'value', have))!r} is kept; with optimizer "
            f"offload the step runs on the CPU, where {want!r} measured about 3x faster than torch's "
            "for-loop AdamW (bench/offload_step.py); drop it from the recipe to get the faster one",
            file=sys.stderr,
            flush=True,
        )


def refuse_used_output_dir(output_dir: Path, attempt_dir: Path) -> None:
    """A fresh start must not train over (and later rotate away) another run's checkpoints."""
    from launcher import checkpoints

    found = [c.path for c in checkpoints.scan(output_dir) if c.complete] if output_dir.is_dir() else []
    if found:
        run = attempt_dir.parent.parent
        raise SpecError(
            [
                f"output_dir {output_dir} already holds {len(found)} checkpoint(s) ({found[-1].name}, ...); "
                f"continue that run with: ftlaunch resume RUN, or launch with --resume auto --name NAME; "
                f"or give the recipe another --output_dir (this run's record: {run})"
            ]
        )


def accumulation_for_global_batch(args: Any, resolved: Resolved) -> int | None:
    """With only ``--global-batch`` given, the recipe's micro batch fixes the accumulation."""
    batch = resolved.batch
    if batch.global_batch is None or batch.micro is not None or batch.grad_accum is not None:
        return None
    micro = int(args.per_device_train_batch_size)
    plan, problems = resolve_batch(micro, None, batch.global_batch, resolved.world_size)
    if problems:
        raise SpecError(
            [f"{p} (micro batch {micro} is the recipe's per_device_train_batch_size)" for p in problems]
        )
    return plan.grad_accum


def field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def is_default(key: str, value: Any, args: Any, defaults: dict[str, Any]) -> bool:
    """Did the recipe leave ``key`` alone? TRL resolves ``bf16=None`` to ``not fp16`` before we see
    it, so that resolved value also counts as the default (an explicit ``bf16=True`` in a TRL
    recipe is indistinguishable from it)."""
    default = defaults.get(key, dataclasses.MISSING)
    if value == default:
        return True
    if key == "bf16" and default is None:
        return bool(value) == (not args.fp16)
    return False


def record_effective(args: Any, resolved: Resolved, attempt_dir: Path) -> None:
    """Log the numbers the trainer will really use; rank 0 records them in the run folder."""
    world = int(args.world_size)
    micro, accum = int(args.per_device_train_batch_size), int(args.gradient_accumulation_steps)
    precision = "bf16" if args.bf16 else ("fp16" if args.fp16 else "fp32")
    stage = resolved.spec.zero.stage
    optim = str(getattr(args.optim, "value", args.optim))
    offload = resolved.spec.zero.offload_optimizer
    summary = (
        f"micro {micro} x accumulation {accum} x world {world} = global {micro * accum * world}, "
        f"{precision}, {'ZeRO-' + str(stage) if stage else 'DDP'}"
        f"{f', optimizer offload to {offload} ({optim})' if offload != 'none' else ''}"
    )
    if rank() != 0:
        return
    print(f"ftlaunch: effective {summary}", file=sys.stderr, flush=True)
    rundir.write_json(
        attempt_dir / rundir.EFFECTIVE,
        {
            "micro_batch_size": micro,
            "grad_accum": accum,
            "world_size": world,
            "global_batch_size": micro * accum * world,
            "precision": precision,
            "zero_stage": stage,
            "max_grad_norm": args.max_grad_norm,
            "optim": optim,
            "offload_optimizer": offload,
            "output_dir": args.output_dir,
            "summary": summary,
        },
    )


# ---------------------------------------------------------------- metrics


def install_recorder(attempt_dir: Path) -> None:
    """Every trainer the recipe builds gets a callback that, on rank 0, appends its logs (step,
    loss, learning rate, grad norm, samples per second, time) to the attempt's ``metrics.jsonl`` and
    keeps ``progress.json`` (phase, step / total) current for the console's progress line and for
    ``ftlaunch status`` / ``plot``. Added to transformers' default callbacks: the recipe is not touched."""
    import transformers.trainer
    from transformers import TrainerCallback

    class RecordMetrics(TrainerCallback):
        def __init__(self) -> None:
            self.samples_per_step = 0
            self.last_log: tuple[int, float] | None = None
            self.last_write = 0.0

        def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            say_phase(attempt_dir, "preparing the trainer (DeepSpeed and optimizer set up at train())")

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            self.samples_per_step = (
                args.per_device_train_batch_size * args.gradient_accumulation_steps * world
            )
            self.last_log = (state.global_step, time.time())
            self.progress(state, "training", first_step=state.global_step, started=time.time())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if time.time() - self.last_write >= PROGRESS_EVERY or state.global_step >= state.max_steps:
                self.progress(state, "training")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.progress(state, "finishing (saving the model, closing)")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not (state.is_world_process_zero and logs):
                return
            now = time.time()
            numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            record: dict[str, Any] = {"step": state.global_step, "time": now, **numbers}
            if (
                self.last_log is not None
                and state.global_step > self.last_log[0]
                and metrics.is_step_log(logs)
            ):
                steps, seconds = state.global_step - self.last_log[0], now - self.last_log[1]
                record["samples_per_second"] = round(steps * self.samples_per_step / seconds, 4)
                self.last_log = (state.global_step, now)
            rundir.append_json_line(attempt_dir / rundir.METRICS, record)

        def progress(self, state: Any, phase: str, **extra: Any) -> None:
            if state.is_world_process_zero:
                self.last_write = time.time()
                record = {"step": state.global_step, "max_steps": state.max_steps}
                say_phase(attempt_dir, phase, samples_per_step=self.samples_per_step, **record, **extra)

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
