"""``ftlaunch estimate``: the memory table for a model on a topology, from its config (or counted
with transformers for a model type the arithmetic does not know)."""

from __future__ import annotations

import argparse
from pathlib import Path

from launcher.errors import Parser, SpecError
from launcher.machine.memory import gpu_memory, node_ram
from launcher.sizing import estimate, text
from launcher.sizing.modelconfig import load_model_config
from launcher.sizing.text import parse_size
from launcher.spec.launchspec import LaunchSpec, Topology, clip

# ---------------------------------------------------------------- ftlaunch estimate


def estimate_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ftlaunch estimate",
        description="Per-GPU memory of a fine-tuning run for every ZeRO stage and offload, from the "
        "model's config.json alone (no weights are read), and whether each fits the GPUs here or "
        "--gpu-memory. The same arithmetic decides --zero auto. Approximate: see the notes it prints.",
        epilog="examples:\n  ftlaunch estimate --model models/Qwen2.5-7B --gpus 8\n"
        "  ftlaunch estimate --model config.json --method lora --gpu-memory 24GB --gradient-checkpointing\n"
        "  ftlaunch estimate --model Qwen/Qwen2.5-0.5B --method qlora   # a copy in the Hugging Face cache",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--model",
        metavar="PATH",
        required=True,
        help="a local model folder, its config.json, or a cached hub id",
    )
    add(
        "--method",
        choices=estimate.METHODS,
        default="full",
        help="full fine-tuning, LoRA or QLoRA (default full)",
    )
    add("--lora-r", metavar="R", default="16", help="LoRA rank, on every linear layer (default 16)")
    add("--seq-len", metavar="N", default="2048", help="tokens per sequence (default 2048)")
    add("--micro-batch", metavar="N", default="1", help="sequences per GPU per step (default 1)")
    add("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass")
    add("--precision", choices=("bf16", "fp16", "fp32"), default="bf16", help="default bf16")
    add(
        "--dtype",
        choices=("float32", "bfloat16", "float16", "auto"),
        default="float32",
        help="the dtype the recipe loads the model in (TRL's --dtype, default float32); plain DDP keeps it",
    )
    add("--gpus", metavar="N", default="1", help="GPUs per node (default 1)")
    add("--nodes", metavar="N", default="1", help="nodes (default 1)")
    add("--gpu-memory", metavar="SIZE", help="each GPU's memory, e.g. 80GB (default: nvidia-smi's here)")
    add(
        "--ram", metavar="SIZE", help="each node's RAM, for what offload puts there (default: this machine's)"
    )
    return parser


def estimate_command(argv: list[str]) -> int:
    ns = estimate_parser().parse_args(argv)
    numbers, problems = positive_numbers(ns)
    for flag, size in (("--gpu-memory", ns.gpu_memory), ("--ram", ns.ram)):
        if size is not None and parse_size(size) is None:
            problems.append(f"{flag} {clip(size)}: not a size; give a unit, e.g. 80GB, 80GiB or 81920MiB")
    config, path, problem = load_model_config(ns.model, "--model")
    if problems or config is None or path is None:
        raise SpecError([*problems, *([problem] if problem else [])])
    model, why = estimate.model_from_config(config)
    counted = "from config.json"
    if model is None:
        model, counted = transformers_model(path, why), "by transformers on the meta device"
    work = estimate.Workload(
        model=model,
        method=ns.method,
        lora_r=numbers["--lora-r"],
        precision=ns.precision,
        dtype=estimate.load_dtype(ns.dtype, config),
        seq_len=numbers["--seq-len"],
        micro=numbers["--micro-batch"],
        checkpointing=ns.gradient_checkpointing,
        nodes=numbers["--nodes"],
        per_node=numbers["--gpus"],
    )
    print(
        f"model: {path} ({model.model_type}): {text.millions(model.total)} parameters ({counted}), "
        f"largest layer {text.millions(model.largest_layer)}"
    )
    print(f"training: {text.describe(work)}")
    print("GiB per GPU:")
    for line in [*text.table(work, budget_here(ns, work.per_node)), "", *text.NOTES]:
        print(line)
    return 0


def positive_numbers(ns: argparse.Namespace) -> tuple[dict[str, int], list[str]]:
    numbers, problems = {}, []
    for flag in ("--lora-r", "--seq-len", "--micro-batch", "--gpus", "--nodes"):
        raw = str(getattr(ns, flag[2:].replace("-", "_")))
        ok = raw.isdigit() and 0 < int(raw) <= 10**7
        numbers[flag] = int(raw) if ok else 1
        problems += [] if ok else [f"{flag} {clip(raw)}: must be a positive integer"]
    return numbers, problems


def budget_here(ns: argparse.Namespace, gpus: int) -> estimate.Budget | None:
    """``--gpu-memory`` or the GPUs here; ``--ram`` or this machine's (None: no GPU memory known)."""
    memory, source, _ = gpu_memory(LaunchSpec(topology=Topology(gpus=gpus), gpu_memory=ns.gpu_memory))
    ram, ram_source = (parse_size(ns.ram), f"--ram {ns.ram}") if ns.ram else node_ram(LaunchSpec())
    return estimate.Budget(memory, source, ram, ram_source) if memory is not None else None


def transformers_model(path: Path, why: str) -> estimate.Model:
    """An architecture the arithmetic does not know, counted exactly by building it on the meta
    device (no memory, no weights); needs torch and transformers, so only ``estimate`` does this."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    except Exception as err:  # any failure of a foreign library: report it with the arithmetic's reason
        raise SpecError(
            [f"--model {path}: {why}, and transformers could not build it either ({clip(str(err))})"]
        ) from None
    text = config.get_text_config()
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    return estimate.Model(
        model_type=str(config.model_type),
        total=sum(p.numel() for p in model.parameters()),
        largest_layer=max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()),
        hidden=int(text.hidden_size),
        layers=int(text.num_hidden_layers),
        heads=int(text.num_attention_heads),
        vocab=int(text.vocab_size),
        lora_linears=sum(m.in_features + m.out_features for m in linears),
        quantizable=sum(m.weight.numel() for m in linears),
    )
