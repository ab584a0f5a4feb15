"""The arithmetic and the compatibility rules, in one place.

``validate`` turns a ``LaunchSpec`` into a ``Resolved`` spec or raises one ``SpecError`` with every
problem found, each naming the flag the user typed (the YAML key is the flag without dashes).
Nothing here touches the file system, the hardware or a heavy library: the hardware facts come in
as a plain ``Hardware`` value, and those ``--zero auto`` decides from as a ``Sizing`` value
(``sizing/zeroauto.py``), so the same rules run in tests, in ``--dry-run`` and before a launch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from launcher.errors import SpecError
from launcher.rules.interval import duration_seconds, share
from launcher.spec.launchspec import LaunchSpec, Leaf, clip, leaves
from launcher.spec.recipeargs import recipe_flag_true, recipe_flag_value

if TYPE_CHECKING:  # loaded where a launch is validated, not by every rank that reads a decision
    from launcher.sizing.zeroauto import Sizing
    from launcher.spec.decided import ZeroAuto
from launcher.rules.batch import resolve_batch
from launcher.spec.decided import BatchPlan, Resolved

ZERO_STAGES = (0, 1, 2, 3)


# Sanity bounds wherever the processes run (the machine's own limits are checked at the edge).
MAX_NODES = 4096


MAX_PER_NODE = 256


# Model dtype -> the 4-bit storage dtype QLoRA needs under ZeRO-3 (peft docs, accelerate/deepspeed.md).
QLORA_ZERO3_STORAGE = {"bf16": "bfloat16", "fp16": "float32", "fp32": "float32"}


def validate(spec: LaunchSpec, sizing: Sizing | None = None) -> Resolved:
    """Every rule, every problem at once. ``sizing``: the facts ``--zero auto`` needs (only a launch
    gathers them); the stage it decides replaces "auto" in the resolved spec."""
    from launcher.rules import passthrough
    from launcher.sizing import zeroauto

    problems = topology_problems(spec) + scalar_problems(spec) + save_problems(spec) + argument_problems(spec)
    batch, batch_errors = resolve_batch(
        spec.batch.micro, spec.batch.grad_accum, spec.batch.global_batch, spec.topology.world_size
    )
    problems += zeroauto.memory_flag_problems(spec)
    spec, zero_auto, auto_problems = zeroauto.decide(spec, batch.micro, sizing, bool(problems + batch_errors))
    problems += (
        auto_problems + zero_problems(spec) + precision_problems(spec) + qlora_problems(spec, zero_auto)
    )
    problems += slurm_problems(spec) + batch_errors + grpo_problems(spec, batch)
    problems += passthrough.problems(Resolved(spec, batch))
    if problems:
        raise SpecError(problems)
    return Resolved(spec, batch, zero_auto=zero_auto)


def topology_problems(spec: LaunchSpec) -> list[str]:
    t = spec.topology
    problems = []
    if t.gpus is not None and t.procs is not None:
        problems.append(
            f"--gpus {t.gpus} and --procs {t.procs} conflict: use --gpus for GPU processes or --procs for "
            "CPU processes, not both"
        )
    if t.gpus is not None and t.gpus < 1:
        problems.append(f"--gpus {t.gpus}: must be at least 1; on a machine without GPUs use --procs N")
    if t.procs is not None and t.procs < 1:
        problems.append(f"--procs {t.procs}: must be at least 1")
    for flag, value, most in (
        ("--nodes", t.nodes, MAX_NODES),
        ("--gpus", t.gpus, MAX_PER_NODE),
        ("--procs", t.procs, MAX_PER_NODE),
    ):
        if value is not None and value > most:
            problems.append(f"{flag} {value}: at most {most}")
    if t.nodes < 1:
        problems.append(f"--nodes {t.nodes}: must be at least 1")
    return problems


def zero_problems(spec: LaunchSpec) -> list[str]:
    z = spec.zero
    if not isinstance(z.stage, int) or z.stage not in ZERO_STAGES:
        return [f"--zero {z.stage}: valid stages are 0 (plain DDP), 1, 2 and 3, or auto"]
    problems = []
    if z.offload_optimizer != "none" and z.stage < 2:
        problems.append(
            f"--offload-optimizer {z.offload_optimizer} needs ZeRO-2 or ZeRO-3 (got --zero {z.stage}); "
            "use --zero 2 or drop the offload"
        )
    if z.offload_params != "none" and z.stage != 3:
        problems.append(
            f"--offload-params {z.offload_params} needs ZeRO-3 (got --zero {z.stage}); use --zero 3 "
            "or drop the offload"
        )
    uses_nvme = "nvme" in (z.offload_optimizer, z.offload_params)
    if uses_nvme and not z.nvme_path:
        problems.append("nvme offload needs --nvme-path DIR (a folder on a fast local disk)")
    if z.nvme_path and not uses_nvme:
        problems.append(
            f"--nvme-path {z.nvme_path} has no effect without nvme offload; "
            "add --offload-optimizer nvme or drop --nvme-path"
        )
    if uses_nvme and spec.topology.on_cpu:
        problems.append("nvme offload needs GPUs (it swaps GPU memory to disk); use --offload-optimizer cpu")
    return problems


def slurm_problems(spec: LaunchSpec) -> list[str]:
    """SLURM resources are only meaningful with ``--slurm``; their formats are checked here, before
    the queue wait, not by sbatch."""
    s = spec.slurm
    problems = []
    if not s.enabled:
        given = [
            leaf.flag
            for leaf in slurm_leaves()
            if getattr(s, leaf.key.split(".")[-1]) not in (None, (), False)
        ]
        if given:
            problems.append(f"{', '.join(given)} only apply to SLURM jobs; add --slurm or drop them")
        return problems
    if s.time is not None and time_minutes(s.time) is None:
        problems.append(
            f"--time {s.time}: not a SLURM time limit; use minutes (90), HH:MM:SS (24:00:00) or D-HH:MM:SS"
        )
    for option in s.sbatch:
        key, sep, _ = option.partition("=")
        if not sep or not key.strip().lstrip("-"):
            problems.append(f"--sbatch {option}: expected KEY=VALUE, e.g. --sbatch mail-type=END")
    if s.cpus_per_task is not None and s.cpus_per_task < 1:
        problems.append(f"--cpus-per-task {s.cpus_per_task}: must be at least 1")
    return problems


def slurm_leaves() -> list[Leaf]:
    return [leaf for leaf in leaves() if leaf.key.startswith("slurm.") and leaf.key != "slurm.enabled"]


def time_minutes(text: str) -> int | None:
    """SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in
    whole minutes, rounded up; ``None`` when ``text`` is not one of them."""
    days, _, rest = text.strip().rpartition("-")
    parts = rest.split(":")
    if (days and not days.isdigit()) or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    numbers = [int(p) for p in parts]
    if days:
        hours, minutes, seconds = [*numbers, 0, 0][:3]
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif len(numbers) == 3:
        total = numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    else:
        total = numbers[0] * 60 + (numbers[1] if len(numbers) == 2 else 0)
    return max(1, -(-total // 60)) if total > 0 else None


MAX_ARG_BYTES = 128 * 1024  # Linux's MAX_ARG_STRLEN: a longer single argument cannot be exec'd


MAX_ARGS_BYTES = 1024 * 1024  # well inside ARG_MAX, which the environment shares


def argument_problems(spec: LaunchSpec) -> list[str]:
    """Recipe arguments every process can actually receive: no NUL byte, within exec's limits."""
    problems = []
    sizes = [len(arg.encode(errors="surrogateescape")) for arg in spec.args]
    for i, (arg, size) in enumerate(zip(spec.args, sizes, strict=True), 1):
        if "\0" in arg:
            problems.append(
                f"recipe argument {i} ({clip(repr(arg))}) contains a NUL byte, which no program can receive"
            )
        elif size > MAX_ARG_BYTES:
            problems.append(
                f"recipe argument {i} is {size} bytes; one is at most 128 KiB (pass a file instead)"
            )
    if sum(sizes) + len(sizes) > MAX_ARGS_BYTES:
        problems.append(
            f"the recipe arguments are {sum(sizes)} bytes; at most 1 MiB in all (pass a file instead)"
        )
    return problems


MIN_HANG_TIMEOUT = 10  # seconds
MAX_RESTARTS = 100  # a bound, so no restart loop can run forever


def scalar_problems(spec: LaunchSpec) -> list[str]:
    problems = []
    for flag, value in (
        ("--micro-batch", spec.batch.micro),
        ("--grad-accum", spec.batch.grad_accum),
        ("--global-batch", spec.batch.global_batch),
        ("--save-steps", spec.checkpointing.save_steps),
        ("--keep", spec.checkpointing.keep),
    ):
        if value is not None and value < 1:
            problems.append(f"{flag} {value}: must be a positive integer")
    if spec.faults.hang_timeout is not None and spec.faults.hang_timeout < MIN_HANG_TIMEOUT:
        problems.append(
            f"--hang-timeout {spec.faults.hang_timeout:g}: must be at least {MIN_HANG_TIMEOUT} seconds "
            "(a rank's progress is written every step; below that a healthy step could look hung)"
        )
    if not 0 <= spec.faults.max_restarts <= MAX_RESTARTS:
        problems.append(
            f"--max-restarts {spec.faults.max_restarts}: must be 0 (never restart) to {MAX_RESTARTS}"
        )
    if spec.max_grad_norm is not None and spec.max_grad_norm < 0:
        problems.append(f"--max-grad-norm {spec.max_grad_norm}: must be >= 0 (0 disables clipping)")
    return problems


def save_problems(spec: LaunchSpec) -> list[str]:
    """``--save-every`` and its bounds: each parses, and only one way of deciding when to save."""
    c = spec.checkpointing
    problems = []
    if c.save_every is not None:
        if c.save_every.strip().lower() != "auto" and duration_seconds(c.save_every) is None:
            problems.append(
                f"--save-every {c.save_every}: use auto, or a time of training such as 90s, 15m or 1h"
            )
        if c.save_steps is not None:
            problems.append(
                f"--save-steps {c.save_steps} and --save-every {c.save_every} both decide when to save; "
                "keep one"
            )
    auto = c.save_every is not None and c.save_every.strip().lower() == "auto"
    for flag, value in (("--save-overhead", c.save_overhead), ("--max-lost", c.max_lost)):
        if value is not None and not auto:
            problems.append(f"{flag} {value} only applies with --save-every auto; add it or drop {flag}")
    if c.save_overhead is not None and share(c.save_overhead) is None:
        problems.append(f"--save-overhead {c.save_overhead}: a share above 0 and below 100%, e.g. 3% or 0.03")
    if c.max_lost is not None and duration_seconds(c.max_lost) is None:
        problems.append(f"--max-lost {c.max_lost}: use a time such as 90s, 20m or 1h")
    return problems


def precision_problems(spec: LaunchSpec) -> list[str]:
    if spec.precision == "fp16" and spec.topology.on_cpu:
        return ["--precision fp16 needs GPUs (CPUs have no fp16 training); use --precision bf16 or fp32"]
    return []


def qlora_problems(spec: LaunchSpec, zero_auto: ZeroAuto | None = None) -> list[str]:
    """QLoRA under ZeRO-3 only works when the 4-bit storage dtype equals the model dtype."""
    if spec.zero.stage != 3 or not recipe_flag_true(spec.args, "--load_in_4bit"):
        return []
    precision = spec.precision or "bf16"
    needed = QLORA_ZERO3_STORAGE[precision]
    storage = recipe_flag_value(spec.args, "--bnb_4bit_quant_storage")
    if storage == needed:
        return []
    stage, fix = (
        ("ZeRO-3 (what --zero auto chose)", "add it")
        if zero_auto
        else ("--zero 3", "add it, or use --zero 2")
    )
    return [
        f"QLoRA (--load_in_4bit) with {stage} needs the recipe argument --bnb_4bit_quant_storage {needed} "
        f"(to match precision {precision}; got {storage or 'unset'}); {fix}"
    ]


def grpo_problems(spec: LaunchSpec, batch: BatchPlan) -> list[str]:
    """TRL's GRPO rule, checked before launch: the generation batch
    (micro x processes x steps_per_generation, the latter defaulting to the accumulation) must be
    divisible by ``--num_generations``, which must be at least 2."""
    raw = recipe_flag_value(spec.args, "--num_generations")
    if raw is None or not raw.isdigit():
        return []
    generations = int(raw)
    if generations < 2:
        return [
            f"recipe argument --num_generations {generations}: GRPO needs at least 2 generations per prompt"
        ]
    if recipe_flag_value(spec.args, "--generation_batch_size") and recipe_flag_value(
        spec.args, "--steps_per_generation"
    ):
        return ["recipe arguments --generation_batch_size and --steps_per_generation conflict: give one"]
    steps = recipe_flag_value(spec.args, "--steps_per_generation")
    per_generation = int(steps) if steps and steps.isdigit() else batch.grad_accum
    if batch.micro is None or per_generation is None:
        return []  # the recipe supplies the rest; TRL checks it at start
    generation_batch = batch.micro * batch.world_size * per_generation
    if generation_batch % generations == 0:
        return []
    return [
        f"GRPO: generation batch = micro {batch.micro} x world {batch.world_size} x steps per generation "
        f"{per_generation} = {generation_batch} is not divisible by --num_generations {generations}; "
        "change --num_generations or the batch flags"
    ]
