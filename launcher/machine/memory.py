"""The memory ``--zero auto`` sizes against: the GPUs' (``nvidia-smi`` or ``--gpu-memory``) and the
node's RAM (``/proc/meminfo``, SLURM's ``--mem``). Gathered once per launch into a ``Sizing``."""

from __future__ import annotations

import re

from launcher.sizing.modelconfig import load_model_config
from launcher.sizing.text import parse_size
from launcher.sizing.zeroauto import Sizing
from launcher.spec.launchspec import LaunchSpec, clip
from launcher.spec.recipeargs import recipe_flag_value

# ---------------------------------------------------------------- memory


def gpu_memory(spec: LaunchSpec) -> tuple[int | None, str, str]:
    """Each GPU's memory in bytes (the smallest of those the run uses), where it came from, and a
    problem when it cannot be known."""
    if spec.gpu_memory is not None:
        return parse_size(spec.gpu_memory), f"--gpu-memory {clip(spec.gpu_memory)}", ""
    if spec.slurm.enabled:
        return (
            None,
            "",
            (
                "--zero auto with --slurm needs --gpu-memory SIZE, e.g. --gpu-memory 80GB (the compute "
                "nodes' GPUs are not visible from here)"
            ),
        )
    from launcher.machine.hardware import probe

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
    from launcher.machine.hardware import ram_bytes

    return ram_bytes(), "this machine's RAM"


def slurm_mem(text: str) -> int | None:
    """SLURM's ``--mem``: a number with an optional K, M (the default), G or T suffix, 1024-based."""
    match = re.fullmatch(r"\s*([0-9]{1,12})\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if match is None:
        return None
    power: int = "KMGT".index((match.group(2) or "M").upper()) + 1
    return int(match.group(1)) * int(1024**power)


def gather(spec: LaunchSpec) -> Sizing:
    """The facts ``rules/validate.py`` decides ``--zero auto`` from, every problem collected."""
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
