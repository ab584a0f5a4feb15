"""``--zero auto``: the ZeRO stage and offload of a launch, decided from the model's size and the
GPUs' memory. Pure, like the rest of the rules: the facts (the model's ``config.json``, each GPU's
memory) are gathered at the edge (``machine/memory.py``, ``sizing/modelconfig.py``) and come in
as a ``Sizing`` value; the arithmetic is ``sizing/estimate.py``'s, the same that ``ftlaunch estimate`` prints.

The rule: the lowest stage (least communication), then the least offload, whose estimate fits
the memory with 10% headroom. On CPU processes (``--procs``) all ranks share one machine's RAM, so
the lowest stage whose per-process estimate fits the RAM divided among them, without offload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from launcher.sizing import estimate, text
from launcher.sizing.text import parse_size
from launcher.spec.decided import ZeroAuto
from launcher.spec.launchspec import LaunchSpec, clip, merge
from launcher.spec.recipeargs import flag_given, recipe_flag_true, recipe_flag_value


@dataclass(frozen=True)
class Sizing:
    """What ``--zero auto`` decides from, gathered at the edge (``machine/memory.py``'s ``gather``): the
    model's ``config.json`` and the memory of each GPU (the smallest of those used), or on CPU
    the node's RAM. ``problems``: what the edge could not find (the model, the GPUs' memory)."""

    config: Mapping[str, Any] | None = None
    model_source: str = ""  # how the user named it: "--model PATH" or the recipe's argument
    memory: int | None = None  # bytes
    memory_source: str = ""  # "nvidia-smi: 8 x NVIDIA H100", "--gpu-memory 80GB", "this machine's RAM"
    ram: int | None = None  # bytes of RAM per node, for what offload puts there; None: not checked
    ram_source: str = ""
    problems: tuple[str, ...] = ()


def memory_flag_problems(spec: LaunchSpec) -> list[str]:
    size = spec.gpu_memory
    if size is None:
        return []
    if parse_size(size) is None:
        return [f"--gpu-memory {clip(size)}: not a size; give a unit, e.g. 80GB, 80GiB or 81920MiB"]
    if spec.topology.on_cpu:
        return [
            f"--gpu-memory {clip(size)} has no effect on CPU processes (--zero auto sizes them against "
            "the machine's RAM); drop it"
        ]
    return []


def decide(
    spec: LaunchSpec, micro: int | None, sizing: Sizing | None, broken: bool
) -> tuple[LaunchSpec, ZeroAuto | None, list[str]]:
    """``--zero auto``: the first of ``estimate.OPTIONS`` (lowest stage, then least offload) whose
    estimate fits the memory less 10% headroom; an offload the user set is kept. The spec comes back
    with the decided stage and offload in place of "auto", so everything downstream reads the
    decision. When nothing can be decided: the problems, and the lowest stage the offloads allow
    (so that the other rules still run)."""
    z = spec.zero
    if z.stage != "auto":
        return spec, None, []
    lowest = 3 if z.offload_params != "none" else 2 if z.offload_optimizer != "none" else 0
    fallback = merge(spec, {"zero.stage": lowest})
    model, problems = sized_model(sizing, broken)
    if model is None or sizing is None:
        return fallback, None, problems
    work, assumed = launch_workload(spec, micro, model, sizing)
    if sizing.memory is None:  # CPU processes where the RAM is not known (SLURM without --mem)
        reason = ("ZeRO-0: the nodes' RAM is not known (add --mem to size it), so plain DDP", assumed)
        return merge(spec, {"zero.stage": 0}), ZeroAuto(0, "none", "none", 0, 0, 0, reason), []
    budget = estimate.Budget(sizing.memory, sizing.memory_source, sizing.ram, sizing.ram_source)
    options = estimate.allowed_options(work.on_cpu, z.offload_optimizer, z.offload_params)
    choice = estimate.choose(work, budget, options)
    if choice.chosen is None:
        least = min(choice.considered, key=lambda e: e.total)
        return (
            fallback,
            None,
            [
                f"--zero auto: nothing fits {room(work, budget)}: the smallest estimate is "
                f"{shown(least, work, budget)}; {remedies(work)}. Estimated for: {assumed}"
            ],
        )
    record = decided_record(spec, choice, work, budget, assumed)
    decided = {"zero.stage": record.stage, "zero.offload_optimizer": record.offload_optimizer}
    decided["zero.offload_params"] = record.offload_params
    return merge(spec, decided), record, []


def sized_model(sizing: Sizing | None, broken: bool) -> tuple[estimate.Model | None, list[str]]:
    """The model to size, or why there is none (a dry run without a launch's facts, a config that
    could not be read, a model type the estimate does not know)."""
    if sizing is None:
        return None, [
            "--zero auto is decided by a launch, from the model and the GPUs' memory; give a stage here "
            "(--zero 0, 1, 2 or 3; ftlaunch estimate --model PATH shows which fits)"
        ]
    if broken or sizing.problems or sizing.config is None:
        return None, list(sizing.problems)
    model, why = estimate.model_from_config(sizing.config)
    if model is None:
        return None, [
            f"--zero auto: {sizing.model_source}: {why}; give --zero 0, 1, 2 or 3 "
            "(ftlaunch estimate --model PATH counts other models with transformers)"
        ]
    return model, []


def decided_record(
    spec: LaunchSpec, choice: estimate.Choice, work: estimate.Workload, budget: estimate.Budget, assumed: str
) -> ZeroAuto:
    """What ``decided.json`` keeps of the choice: the stage and offloads, the numbers and why."""
    chosen = choice.chosen
    assert chosen is not None
    z = spec.zero
    passed = ", ".join(shown(e, work, budget) for e in choice.passed_over)
    reason = (
        f"{chosen.option.label()}: {text.gib(chosen.total)} GiB estimated per "
        f"{'process' if work.on_cpu else 'GPU'}, {room(work, budget)}{ram_note(chosen, budget)}"
        + (f"; needing more: {passed}" if passed else ""),
        f"estimated (approximately; ftlaunch estimate shows the parts) for: {assumed}",
    )
    return ZeroAuto(
        chosen.option.stage,
        _device(z.offload_optimizer, chosen.option.offload_optimizer),
        _device(z.offload_params, chosen.option.offload_params),
        int(chosen.total),
        int(budget.usable(work)),
        int(chosen.cpu_offload),
        reason,
    )


def room(work: estimate.Workload, budget: estimate.Budget) -> str:
    shared = f" shared by {work.per_node} processes" if work.on_cpu else ""
    usable = text.headroom_text(budget.usable(work), budget.memory, budget.source + shared)
    return f"{usable} per {'process' if work.on_cpu else 'GPU'}"


def shown(est: estimate.Estimate, work: estimate.Workload, budget: estimate.Budget) -> str:
    """An option that did not fit, with its number (and the RAM its offload needs, if that is why)."""
    ram = (
        f" but offloads {text.gib(est.cpu_offload)} GiB of RAM per node"
        if budget.verdict(est, work) == "no (RAM)"
        else ""
    )
    return f"{est.option.label()} {text.gib(est.total)} GiB{ram}"


def ram_note(est: estimate.Estimate, budget: estimate.Budget) -> str:
    if not est.cpu_offload:
        return ""
    ram = budget.usable_ram()
    where = (
        f"of {text.headroom_text(ram, budget.ram, budget.ram_source)}"
        if ram is not None and budget.ram is not None
        else "(not checked: the nodes' RAM is not known; --mem gives it)"
    )
    return f"; offload: {text.gib(est.cpu_offload)} GiB of RAM per node {where}"


def _device(given: str, offloaded: bool) -> str:
    """The user's offload device when they gave one (nvme stays nvme), else cpu where chosen."""
    return given if given != "none" else "cpu" if offloaded else "none"


def remedies(work: estimate.Workload) -> str:
    """What would make a run that fits nowhere smaller, among what it does not do yet."""
    fixes = ["fewer --procs" if work.on_cpu else "more GPUs (--gpus, --nodes)"]
    fixes.append("a smaller micro batch (--micro-batch) or sequence (--max_length)")
    if not work.checkpointing:
        fixes.append("gradient checkpointing (--gradient_checkpointing)")
    if work.method != "qlora":
        fixes.append(
            "LoRA (--use_peft) / QLoRA (--load_in_4bit)"
            if work.method == "full"
            else "QLoRA (--load_in_4bit)"
        )
    return "use " + ", ".join(fixes[:-1]) + ", or " + fixes[-1]


TRL_SEQ_LEN = 1024  # SFTConfig / DPOConfig max_length


HF_MICRO = 8  # TrainingArguments.per_device_train_batch_size


TRL_LORA_R = 16  # ModelConfig.lora_r


def launch_workload(
    spec: LaunchSpec, micro_given: int | None, model: estimate.Model, sizing: Sizing
) -> tuple[estimate.Workload, str]:
    """What the recipe will train, read from its arguments, with TRL's defaults where they are
    silent; and those assumptions in words (the dry run shows them)."""
    args = spec.args
    method = trained_method(args)
    rank, rank_note = counted(args, "--lora_r", TRL_LORA_R, "TRL's default")
    seq, seq_note = counted(args, "--max_length", TRL_SEQ_LEN, "TRL's default --max_length")
    if micro_given is not None:
        micro, micro_note = micro_given, ""
    else:
        micro, micro_note = counted(args, "--per_device_train_batch_size", HF_MICRO, "transformers' default")
    # transformers 5 renamed it activation_checkpointing; TRL's configs default it to True
    flags = [f for f in ("--gradient_checkpointing", "--activation_checkpointing") if flag_given(args, f)]
    checkpointing = recipe_flag_true(args, flags[-1]) if flags else True
    t = spec.topology
    work = estimate.Workload(
        model=model,
        method=method,
        lora_r=rank,
        precision=spec.precision or "bf16",
        dtype=estimate.load_dtype(recipe_flag_value(args, "--dtype"), sizing.config or {}),
        seq_len=seq,
        micro=micro,
        checkpointing=checkpointing,
        nodes=t.nodes,
        per_node=t.per_node,
        on_cpu=t.on_cpu,
    )
    what = {
        "full": "full fine-tuning",
        "lora": f"LoRA r={rank}{rank_note}",
        "qlora": f"QLoRA r={rank}{rank_note}",
    }
    defaulted = " (TRL default)"
    assumed = (
        f"{model.model_type}, {model.total / 1e9:.2f}B parameters ({sizing.model_source}); "
        f"{what[method]}, {work.precision}{'' if spec.precision else defaulted}, "
        f"seq {seq}{seq_note} x micro {micro}{micro_note}, "
        f"gradient checkpointing {'on' if checkpointing else 'off'}{'' if flags else defaulted}"
    )
    return work, assumed


def trained_method(args: tuple[str, ...]) -> estimate.Method:
    if recipe_flag_true(args, "--load_in_4bit"):
        return "qlora"
    return "lora" if recipe_flag_true(args, "--use_peft") else "full"


def counted(args: tuple[str, ...], flag: str, default: int, where: str) -> tuple[int, str]:
    """A positive count the recipe was given, else ``default`` and where that default comes from."""
    raw = recipe_flag_value(args, flag)
    if raw is not None and raw.isdigit() and int(raw) > 0:
        return int(raw), ""
    return default, f" ({where})"
