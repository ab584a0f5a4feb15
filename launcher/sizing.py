"""The edge of ``--zero auto`` and ``ftlaunch estimate``: find and read the model's ``config.json``
and learn the memory of the GPUs (or the RAM). The arithmetic and the choice are pure
(``launcher.estimate``, ``rules.decide_zero``); everything that reads a file or asks
``nvidia-smi`` is here.

A model is named by a local folder, a ``config.json`` file, or a hub id that has a copy in the
local Hugging Face cache (nothing is downloaded: a launch must not wait on the network, and the
dry run must decide exactly what the launch will).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from launcher import estimate
from launcher.errors import Parser, SpecError
from launcher.recipeargs import recipe_flag_value
from launcher.spec import LaunchSpec, Topology, clip
from launcher.zeroauto import Sizing

MAX_CONFIG_BYTES = 4 * 2**20
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


# ---------------------------------------------------------------- the model


def hub_cache() -> Path:
    """huggingface_hub's cache folder, by its own variables (it is not imported for this)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "huggingface" / "hub"


def find_config(name: str) -> tuple[Path | None, str]:
    """``config.json`` of a folder, a file, or a hub id's cached snapshot (the ``main`` ref's, or
    else the newest); or why there is none."""
    path = Path(name).expanduser()
    if path.is_dir():
        found = path / "config.json"
        return (found, "") if found.is_file() else (None, "a folder without config.json")
    if path.is_file():
        return path, ""
    if not HUB_ID.fullmatch(name) or name.startswith("."):
        return None, "no such file or folder"
    repo = hub_cache() / f"models--{name.replace('/', '--')}"
    ref = repo / "refs" / "main"
    snapshots = [repo / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    if (repo / "snapshots").is_dir():
        snapshots += sorted((repo / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for snapshot in snapshots:
        if (snapshot / "config.json").is_file():
            return snapshot / "config.json", ""
    return None, f"not a local folder or file, and no copy in the Hugging Face cache ({hub_cache()})"


def read_config(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return None, f"{path} is over {MAX_CONFIG_BYTES // 2**20} MiB: not a model's config.json"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, f"{path}: cannot be read as JSON ({clip(str(err))})"
    if not isinstance(data, dict):
        return None, f"{path}: not a JSON object"
    return data, ""


def load_model_config(name: str, where: str) -> tuple[dict[str, Any] | None, Path | None, str]:
    """The config and its path, or a problem naming ``where`` (the flag) and the fix."""
    path, why = find_config(name)
    if path is None:
        return (
            None,
            None,
            (f"{where} {clip(name)}: {why}; give --model with a local model folder or its config.json"),
        )
    config, why = read_config(path)
    if config is None:
        return (
            None,
            path,
            f"{where} {clip(name)}: {why}; give --model with a local model folder or its config.json",
        )
    return config, path, ""


# ---------------------------------------------------------------- memory


def gpu_memory(spec: LaunchSpec) -> tuple[int | None, str, str]:
    """Each GPU's memory in bytes (the smallest of those the run uses), where it came from, and a
    problem when it cannot be known."""
    if spec.gpu_memory is not None:
        return estimate.parse_size(spec.gpu_memory), f"--gpu-memory {clip(spec.gpu_memory)}", ""
    if spec.slurm.enabled:
        return (
            None,
            "",
            (
                "--zero auto with --slurm needs --gpu-memory SIZE, e.g. --gpu-memory 80GB (the compute "
                "nodes' GPUs are not visible from here)"
            ),
        )
    from launcher.hardware import probe

    hw = probe()
    used = spec.topology.gpus or 1
    sizes, names = hw.gpu_memory[:used], hw.gpu_names[:used]
    if not names:
        return (
            None,
            "",
            "--zero auto: no GPU is visible here to size against; give --gpu-memory SIZE, e.g. 80GB",
        )
    known = [size for size in sizes if size is not None]
    if len(known) < len(names):
        return (
            None,
            "",
            (
                "--zero auto: nvidia-smi does not report the GPUs' memory here; give --gpu-memory SIZE, "
                "e.g. 80GB"
            ),
        )
    smallest = min(known)
    kinds = sorted(set(names))
    return smallest, f"nvidia-smi: {len(names)} x {' / '.join(kinds)}", ""


def node_ram(spec: LaunchSpec) -> tuple[int | None, str]:
    """Each node's RAM (what CPU processes share, where offload goes): SLURM's ``--mem`` for a
    queued run (unknown without it), else this machine's."""
    if spec.slurm.enabled:
        return (slurm_mem(spec.slurm.mem), f"--mem {spec.slurm.mem}") if spec.slurm.mem else (None, "")
    from launcher.hardware import ram_bytes

    return ram_bytes(), "this machine's RAM"


def slurm_mem(text: str) -> int | None:
    """SLURM's ``--mem``: a number with an optional K, M (the default), G or T suffix, 1024-based."""
    match = re.fullmatch(r"\s*([0-9]{1,12})\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if match is None:
        return None
    power: int = "KMGT".index((match.group(2) or "M").upper()) + 1
    return int(match.group(1)) * int(1024**power)


def gather(spec: LaunchSpec) -> Sizing:
    """The facts ``rules.validate`` decides ``--zero auto`` from, every problem collected."""
    problems = []
    given = spec.model or recipe_flag_value(spec.args, "--model_name_or_path")
    where = "--model" if spec.model else "the recipe's --model_name_or_path"
    config, source = None, ""
    if given is None:
        problems.append(
            "--zero auto needs the model to size: give --model PATH (a local model folder or its "
            "config.json); the recipe has no --model_name_or_path"
        )
    else:
        config, path, problem = load_model_config(given, where)
        problems += [problem] if problem else []
        source = f"{where} {clip(given)}" + (f" -> {path}" if path is not None and str(path) != given else "")
    ram, ram_source = node_ram(spec)
    if spec.topology.on_cpu:  # the processes live in the RAM: it is their memory, nothing is offloaded
        return Sizing(config, source, ram, ram_source, problems=tuple(problems))
    memory, memory_source, problem = gpu_memory(spec)
    problems += [problem] if problem else []
    return Sizing(config, source, memory, memory_source, ram, ram_source, tuple(problems))


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
        if size is not None and estimate.parse_size(size) is None:
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
        f"model: {path} ({model.model_type}): {estimate.millions(model.total)} parameters ({counted}), "
        f"largest layer {estimate.millions(model.largest_layer)}"
    )
    print(f"training: {estimate.describe(work)}")
    print("GiB per GPU:")
    for line in [*estimate.table(work, budget_here(ns, work.per_node)), "", *estimate.NOTES]:
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
    ram, ram_source = (estimate.parse_size(ns.ram), f"--ram {ns.ram}") if ns.ram else node_ram(LaunchSpec())
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
