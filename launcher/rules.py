"""The arithmetic and the compatibility rules, in one place.

``validate`` turns a ``LaunchSpec`` into a ``Resolved`` spec or raises one ``SpecError`` with every
problem found, each naming the flag the user typed (the YAML key is the flag without dashes).
Nothing here touches the file system, the hardware or a heavy library: the hardware facts come in
as a plain ``Hardware`` value, and those ``--zero auto`` decides from as a ``Sizing`` value
(``launcher.zeroauto``), so the same rules run in tests, in ``--dry-run`` and before a launch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from launcher.errors import SpecError
from launcher.recipeargs import recipe_flag_true, recipe_flag_value
from launcher.spec import Batch, LaunchSpec, Leaf, clip, from_mapping, leaves, merge, to_dict

if TYPE_CHECKING:  # loaded where a launch is validated, not by every rank that reads a decision
    from launcher.zeroauto import Sizing, ZeroAuto

ZERO_STAGES = (0, 1, 2, 3)
# Sanity bounds wherever the processes run (the machine's own limits are checked at the edge).
MAX_NODES = 4096
MAX_PER_NODE = 256

# Model dtype -> the 4-bit storage dtype QLoRA needs under ZeRO-3 (peft docs, accelerate/deepspeed.md).
QLORA_ZERO3_STORAGE = {"bf16": "bfloat16", "fp16": "float32", "fp32": "float32"}


@dataclass(frozen=True)
class Hardware:
    """What the launching machine can see; gathered at the edge (``launcher.hardware``)."""

    gpu_names: tuple[str, ...] = ()
    compute_capabilities: tuple[float | None, ...] = ()  # None: the driver did not say ([N/A])
    cpus: int | None = None  # usable CPU cores; None: not known
    gpu_memory: tuple[int | None, ...] = ()  # bytes per GPU; None: the driver did not say

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_names)


@dataclass(frozen=True)
class BatchPlan:
    """The batch triad for one data-parallel world size; ``None`` means "the recipe's value"."""

    micro: int | None
    grad_accum: int | None
    global_batch: int | None
    world_size: int

    def describe(self) -> str:
        def show(v: int | None) -> str:
            return str(v) if v is not None else "(recipe)"

        return (
            f"micro {show(self.micro)} x accumulation {show(self.grad_accum)} x world {self.world_size}"
            f" = global {show(self.global_batch)}"
        )


@dataclass(frozen=True)
class Resume:
    """Where an attempt continues from, decided by the launcher (never by the ranks)."""

    checkpoint: str  # the complete checkpoint folder the trainer resumes from
    step: int
    universal: bool = False  # saved on another world size: load DeepSpeed's universal form
    saved_world_size: int | None = None
    saved_global_batch: int | None = None  # the run's global batch until now (None: not recorded)
    derived: tuple[str, ...] = ()  # batch values chosen to keep it ("micro", "grad_accum"): see ResumeBatch


@dataclass(frozen=True)
class Resolved:
    """A spec that passed every rule, with its derived numbers."""

    spec: LaunchSpec  # with the decided ZeRO stage and offload (never "auto")
    batch: BatchPlan
    resume: Resume | None = None
    zero_auto: ZeroAuto | None = None  # set when --zero auto decided the stage

    @property
    def world_size(self) -> int:
        return self.spec.topology.world_size

    @property
    def zero_stage(self) -> int:
        stage = self.spec.zero.stage
        assert isinstance(stage, int), "a Resolved spec holds the decided stage"
        return stage

    @property
    def uses_deepspeed(self) -> bool:
        return self.zero_stage > 0

    def to_dict(self) -> dict[str, Any]:
        """The decided values as JSON: what each rank reads instead of deciding again."""
        resume = dataclasses.asdict(self.resume) if self.resume else None
        out = {"spec": to_dict(self.spec), "batch": dataclasses.asdict(self.batch), "resume": resume}
        if self.zero_auto is not None:  # only then: records of stages given by hand stay as they were
            out["zero_auto"] = {**dataclasses.asdict(self.zero_auto), "reason": list(self.zero_auto.reason)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> Resolved:
        saved = data.get("resume")
        resume = Resume(**{**saved, "derived": tuple(saved.get("derived", ()))}) if saved else None
        auto = data.get("zero_auto")
        zero_auto = None
        if auto:  # only then does a rank load --zero auto's module
            from launcher.zeroauto import ZeroAuto

            zero_auto = ZeroAuto(**{**auto, "reason": tuple(auto["reason"])})
        return cls(from_mapping(data["spec"], source), BatchPlan(**data["batch"]), resume, zero_auto)


def validate(spec: LaunchSpec, sizing: Sizing | None = None) -> Resolved:
    """Every rule, every problem at once. ``sizing``: the facts ``--zero auto`` needs (only a launch
    gathers them); the stage it decides replaces "auto" in the resolved spec."""
    from launcher import passthrough, zeroauto

    problems = topology_problems(spec) + scalar_problems(spec) + argument_problems(spec)
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
    if spec.max_grad_norm is not None and spec.max_grad_norm < 0:
        problems.append(f"--max-grad-norm {spec.max_grad_norm}: must be >= 0 (0 disables clipping)")
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


def resolve_batch(
    micro: int | None, grad_accum: int | None, global_batch: int | None, world: int
) -> tuple[BatchPlan, list[str]]:
    """Any two of micro / accumulation / global give the third: ``global = micro x accum x world``.

    With fewer than two, the missing ones stay ``None`` and the recipe's values are adopted at run
    time (``entry.py`` resolves them with this same function).
    """
    plan = BatchPlan(micro, grad_accum, global_batch, world)
    if world < 1 or any(v is not None and v < 1 for v in (micro, grad_accum, global_batch)):
        return plan, []  # reported by the topology / scalar rules
    if micro is not None and grad_accum is not None:
        product = micro * grad_accum * world
        if global_batch is not None and global_batch != product:
            return plan, [
                f"--global-batch {global_batch} != --micro-batch {micro} x --grad-accum {grad_accum} "
                f"x world size {world} = {product}; give only two of the three"
            ]
        return BatchPlan(micro, grad_accum, product, world), []
    if global_batch is None:
        return plan, []
    known, known_flag = (micro, "--micro-batch") if micro is not None else (grad_accum, "--grad-accum")
    step = (known or 1) * world
    if global_batch % step:
        why = f"{known_flag} {known} x world size {world}" if known is not None else f"world size {world}"
        return plan, [
            f"--global-batch {global_batch} is not divisible by {why} = {step}; "
            f"nearest valid: {nearest_multiples(global_batch, step)}"
        ]
    if micro is not None:
        return BatchPlan(micro, global_batch // step, global_batch, world), []
    if grad_accum is not None:
        return BatchPlan(global_batch // step, grad_accum, global_batch, world), []
    return plan, []


def nearest_multiples(value: int, step: int) -> str:
    below = (value // step) * step
    choices = [c for c in (below, below + step) if c >= step]
    return " or ".join(f"--global-batch {c}" for c in choices)


def hardware_problems(spec: LaunchSpec, hw: Hardware) -> list[str]:
    """Checks that only make sense on the machine that will run the processes (local launch)."""
    t = spec.topology
    if t.procs is not None:
        if hw.cpus is not None and t.procs > hw.cpus:
            cores = f"this machine has {hw.cpus} CPU cores to use"
            return [f"--procs {t.procs}: {cores}; use --procs {hw.cpus} or less"]
        return []
    if hw.gpu_count == 0:
        if t.gpus is None:
            return [
                "no GPU is visible on this machine (a launch without --gpus or --procs uses 1 GPU); "
                "add --procs N to run N processes on CPU"
            ]
        return [f"--gpus {t.gpus}: no GPU is visible on this machine; use --procs {t.gpus} to run on CPU"]
    problems = []
    wanted = t.gpus if t.gpus is not None else 1
    if wanted > hw.gpu_count:
        problems.append(f"--gpus {wanted}: only {hw.gpu_count} GPU(s) visible; use --gpus {hw.gpu_count}")
    old = [cc for cc in hw.compute_capabilities if cc is not None and cc < 8.0]
    if spec.precision == "bf16" and old:
        problems.append(
            f"--precision bf16 needs an Ampere or newer GPU (compute capability >= 8.0); this machine has "
            f"{', '.join(hw.gpu_names)} (compute capability {min(old)}); use --precision fp16"
        )
    return problems


def same_training_problems(recorded: LaunchSpec, spec: LaunchSpec) -> list[str]:
    """A checkpoint continues only the recipe and model that wrote it."""
    problems = []
    if PurePath(recorded.recipe or "").name != PurePath(spec.recipe or "").name:
        problems.append(
            f"the run was trained by {recorded.recipe}, not {spec.recipe}; resume it with its own recipe "
            "or start a new run under another --name"
        )
    before = recipe_flag_value(recorded.args, "--model_name_or_path")
    now = recipe_flag_value(spec.args, "--model_name_or_path")
    if before != now:
        problems.append(
            f"the run's checkpoints are of --model_name_or_path {before or '(the recipe default)'}, not "
            f"{now or '(the recipe default)'}; resume with the same model or start a new run"
        )
    return problems


def stages_compatible(saved: int, wanted: int) -> bool:
    """ZeRO-1 and ZeRO-2 write the same checkpoint layout; DDP (a full ``optimizer.pt``) and ZeRO-3
    (partitioned parameters) each load only their own."""
    return saved == wanted or {saved, wanted} <= {1, 2}


def resume_spec(
    spec: LaunchSpec, saved: Mapping[str, int | None]
) -> tuple[LaunchSpec, ResumeBatch | None, list[str]]:
    """The spec of a resumed attempt: its stage loads the checkpoint, and its batch is the run's
    (``resume_batch``). ``spec.batch`` holds only the batch flags typed for this attempt; the
    checkpoint's batch is ``None`` when its marker did not record one (the typed flags then apply
    as in a fresh launch)."""
    problems = []
    stage = saved.get("zero_stage")
    if spec.zero.stage == "auto" and stage is not None:  # a checkpoint loads under its own stage only
        spec = merge(spec, {"zero.stage": stage})
    if (
        stage is not None
        and isinstance(spec.zero.stage, int)
        and not stages_compatible(stage, spec.zero.stage)
    ):
        can = "--zero 1 or --zero 2" if stage in (1, 2) else f"--zero {stage}"
        problems.append(
            f"--zero {spec.zero.stage}: the checkpoint was saved under "
            f"{'plain DDP' if stage == 0 else f'ZeRO-{stage}'} and cannot be loaded there; resume with {can}"
        )
    micro, accum, world = saved.get("micro"), saved.get("grad_accum"), saved.get("world_size")
    if micro is None or accum is None or world is None:
        return spec, None, problems
    chosen, batch_problems = resume_batch(
        spec.batch, BatchPlan(micro, accum, micro * accum * world, world), spec.topology.world_size
    )
    if chosen is None:
        return spec, None, problems + batch_problems
    decided = {"batch.micro": chosen.micro, "batch.grad_accum": chosen.grad_accum, "batch.global_batch": None}
    return merge(spec, decided), chosen, problems


@dataclass(frozen=True)
class ResumeBatch:
    """The batch of a resumed attempt. ``derived`` names the values the launch chose to keep the
    run's global batch: on every rank they replace the recipe's own, hard-coded or not (a recipe
    that fixes ``gradient_accumulation_steps=8`` must still resume on half the processes). The
    values typed for this attempt are held against the recipe as in a fresh launch."""

    micro: int
    grad_accum: int
    derived: tuple[str, ...]
    saved_global: int  # the run's global batch so far


def resume_batch(typed: Batch, saved: BatchPlan, world: int) -> tuple[ResumeBatch | None, list[str]]:
    """Micro x accumulation on the new world size.

    Trainer skips ``global_step x accumulation`` local batches on resume, which lands on the right
    sample only if micro x accumulation x world is unchanged (resume-facts: otherwise it silently
    re-trains samples it has seen). So with no batch flag typed the global batch is kept: per
    process ``global / world``, split into the largest micro batch that divides it and is no larger
    than the saved one (memory), the rest accumulated. Typed flags are a deliberate choice: a typed
    split of the same global batch is as good, and a typed global batch changes the training
    (``batch_change``); they are taken, or refused, never dropped."""
    assert saved.global_batch is not None and saved.micro is not None
    if world < 1 or any(v is not None and v < 1 for v in (typed.micro, typed.grad_accum, typed.global_batch)):
        return None, []  # reported by the topology and scalar rules (``validate``)
    if typed.micro is not None and typed.grad_accum is not None:
        plan, problems = resolve_batch(typed.micro, typed.grad_accum, typed.global_batch, world)
        return _typed_batch(plan, (), saved, problems)
    target = typed.global_batch if typed.global_batch is not None else saved.global_batch
    if target % world:
        return None, [_indivisible(target, world, typed.global_batch is not None, saved)]
    per_rank = target // world
    if typed.micro is not None or typed.grad_accum is not None:
        return _one_typed(typed, per_rank, world, saved)
    micro = max(m for m in range(1, min(saved.micro, per_rank) + 1) if per_rank % m == 0)
    return ResumeBatch(micro, per_rank // micro, ("micro", "grad_accum"), saved.global_batch), []


def _typed_batch(
    plan: BatchPlan, derived: tuple[str, ...], saved: BatchPlan, problems: list[str]
) -> tuple[ResumeBatch | None, list[str]]:
    if problems or plan.micro is None or plan.grad_accum is None:
        return None, problems
    assert saved.global_batch is not None
    return ResumeBatch(plan.micro, plan.grad_accum, derived, saved.global_batch), []


def _one_typed(
    typed: Batch, per_rank: int, world: int, saved: BatchPlan
) -> tuple[ResumeBatch | None, list[str]]:
    """``--micro-batch`` or ``--grad-accum`` alone: the other one fills the global batch."""
    given, flag, other = (
        (typed.micro, "--micro-batch", "grad_accum")
        if typed.micro is not None
        else (typed.grad_accum, "--grad-accum", "micro")
    )
    assert given is not None
    if per_rank % given:
        fits = ", ".join(str(d) for d in divisors(per_rank))
        kept = "the run's" if typed.global_batch is None else "the requested"
        return None, [
            f"{flag} {given}: {kept} global batch {per_rank * world} on world size {world} is {per_rank} "
            f"samples per process, not divisible by {given}; give a {flag} dividing {per_rank} ({fits}), or "
            "change the global batch with --global-batch"
        ]
    rest = per_rank // given
    micro, accum = (given, rest) if other == "grad_accum" else (rest, given)
    plan = BatchPlan(micro, accum, per_rank * world, world)
    return _typed_batch(plan, (other,), saved, [])


def _indivisible(target: int, world: int, typed: bool, saved: BatchPlan) -> str:
    whose = (
        f"--global-batch {target}"
        if typed
        else f"the run's global batch {target} (micro {saved.micro} x accumulation {saved.grad_accum} x "
        f"world {saved.world_size})"
    )
    near = [d for d in divisors(target) if d != world]
    below = [d for d in near if d < world][-1:]
    above = [d for d in near if d > world][:1]
    return (
        f"world size {world}: {whose} cannot be split evenly over {world} processes; resume on a world size "
        f"dividing {target}, e.g. {' or '.join(map(str, below + above))}"
    )


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def batch_change(resolved_batch: BatchPlan, saved_global: int | None, step: int) -> str | None:
    """The warning for a resume whose typed batch flags change the run's global batch, or None."""
    new = resolved_batch.global_batch
    if saved_global is None or new is None or new == saved_global:
        return None
    lost = "skipped" if new > saved_global else "re-trained"
    return (
        f"the global batch changes from {saved_global} to {new} at step {step}: from here on this run no "
        f"longer trains as it did, and the trainer's data position ({step} steps x {new} samples) is not "
        f"the {step * saved_global} samples seen so far, so samples are {lost}; resume without batch "
        "flags to keep the run's training"
    )
