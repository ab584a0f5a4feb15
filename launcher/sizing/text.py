"""The estimate as people read and write it: sizes (``80GB``, ``80GiB``), GiB figures and the
table ``ftlaunch estimate`` prints, with the notes on where each number comes from."""

from __future__ import annotations

import math
import re

from launcher.sizing.estimate import GIB, HEADROOM, OPTIONS, Budget, Workload, choose, estimates


def headroom_text(usable: float, total: int, source: str) -> str:
    return f"{gib(usable)} GiB usable ({100 - round(100 * HEADROOM)}% of {gib(total)} GiB, {source})"


def gib(n: float) -> str:
    return f"{n / GIB:.1f}"


# ---------------------------------------------------------------- the table ``ftlaunch estimate`` prints

COLUMNS = ("params", "grads", "optim", "gather", "activ", "other", "total/GPU", "fits", "CPU/node")


def table(work: Workload, budget: Budget | None) -> list[str]:
    """One row per option (GiB per GPU by component), whether it fits, and what ``--zero auto``
    would pick: the same arithmetic and the same choice as a launch."""
    width = max(len(o.label()) for o in OPTIONS) + 2
    lines = [" " * width + "".join(f"{c:>10}" for c in COLUMNS)]
    for est in estimates(work):
        fits = budget.verdict(est, work) if budget else "-"
        parts = (est.params, est.grads, est.optimizer, est.gather, est.activations, est.overhead, est.total)
        cpu = gib(est.cpu_offload) if est.cpu_offload else "-"
        row = f"{est.option.label():<{width}}" + "".join(f"{gib(p):>10}" for p in parts)
        lines.append(row + f"{fits:>10}{cpu:>10}")
    lines.append("")
    if budget is None:
        lines.append("fits: unknown (no GPU visible here); give --gpu-memory SIZE, e.g. 80GB")
        return lines
    lines.append(f"fits: total/GPU within {headroom_text(budget.usable(work), budget.memory, budget.source)}")
    ram = budget.usable_ram()
    if ram is not None and budget.ram is not None:
        lines.append(f"      and CPU/node within {headroom_text(ram, budget.ram, budget.ram_source)}")
    chosen = choose(work, budget).chosen
    if chosen is None:
        lines.append("--zero auto: nothing fits")
    else:
        label = chosen.option.label()
        lines.append(f"--zero auto would pick: {label} (the lowest stage, then the least offload, that fits)")
    return lines


def describe(work: Workload) -> str:
    m = work.model
    what = {"full": "full fine-tuning", "lora": f"LoRA r={work.lora_r}", "qlora": f"QLoRA r={work.lora_r}"}
    return (
        f"{what[work.method]} ({millions(work.trainable)} trainable of {millions(m.total)}), "
        f"{work.precision}, world {work.world} ({plural(work.nodes, 'node')} x "
        f"{plural(work.per_node, 'GPU')}), seq {work.seq_len} x micro {work.micro}, "
        f"gradient checkpointing {'on' if work.checkpointing else 'off'}"
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def millions(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


NOTES = (
    "approximate. Model states follow DeepSpeed's estimators (bf16/fp16 per trainable parameter: 2 bytes",
    "of weights, 2 of gradients, 16 of optimizer state: fp32 master, fp32 gradient partition, Adam's two",
    "moments); ZeRO-3 adds a gather buffer of 4 bytes per parameter of the largest layer. ZeRO-0 is plain",
    "DDP: weights, gradients (twice: DDP's buckets) and Adam in the load dtype (--dtype). activ: 34·s·b·h",
    "bytes per layer (Korthikanti et al. 2022, no attention scores: SDPA), with checkpointing 2·s·b·h per",
    "layer + one layer; plus the logits. other: 2 GiB fixed (CUDA context, NCCL, buckets). CPU/node:",
    "what offload puts in each node's RAM (x1.5, DeepSpeed's buffer factor).",
)


# ---------------------------------------------------------------- sizes as people write them

SIZE = re.compile(r"\s*([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*(TB|TIB|T|GB|GIB|G|MB|MIB|M)\s*", re.IGNORECASE)


UNITS = {"TB": 10**12, "TIB": 2**40, "T": 2**40, "GB": 10**9, "GIB": 2**30, "G": 2**30}
UNITS |= {"MB": 10**6, "MIB": 2**20, "M": 2**20}


def parse_size(text: str) -> int | None:
    """``80GB`` (10^9 bytes), ``80GiB`` or ``80G`` (2^30), ``81920MB``/``MiB``/``M``; None if not a size."""
    match = SIZE.fullmatch(text)
    if match is None:
        return None
    value = float(match.group(1)) * UNITS[match.group(2).upper()]
    return int(value) if math.isfinite(value) and value >= 1 else None
