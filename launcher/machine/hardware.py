"""What this machine has: usable CPU cores and RAM, and the GPUs ``nvidia-smi`` reports (the CLI
never imports torch), narrowed to ``CUDA_VISIBLE_DEVICES`` whether it lists indices or UUIDs."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from launcher.spec.launchspec import LaunchSpec

QUERY = "--query-gpu=index,uuid,name,compute_cap,memory.total"


def probe() -> Hardware:
    """Visible GPUs with their compute capability (None where the driver says ``[N/A]``)."""
    cpus = usable_cpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return Hardware(cpus=cpus)
    rows = smi_rows()
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        rows = [r for r in rows if any(is_device(r, w) for w in wanted)]
        # MIG instances are listed by UUID only and are not rows of the GPU query: count them as given.
        rows += [["", w, "MIG device", "[N/A]"] for w in wanted if w.startswith("MIG-")]
    memory = tuple(mebibytes(r[4]) if len(r) > 4 else None for r in rows)
    return Hardware(tuple(r[2] for r in rows), tuple(capability(r[3]) for r in rows), cpus, memory)


def smi_rows() -> list[list[str]]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, QUERY, "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError, UnicodeDecodeError):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    return [r for r in rows if len(r) in (4, 5)]  # 4: a driver that does not report the memory


def is_device(row: list[str], wanted: str) -> bool:
    """CUDA accepts an index, a full UUID or a unique UUID prefix (``GPU-8f3a``)."""
    index, uuid = row[0], row[1]
    return wanted == index or (wanted.startswith("GPU-") and uuid.startswith(wanted))


def capability(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def mebibytes(text: str) -> int | None:
    """``81559 MiB`` (nvidia-smi's csv) in bytes; None for ``[N/A]``."""
    number, _, unit = text.strip().partition(" ")
    return int(number) * 2**20 if number.isdigit() and unit.strip() in ("MiB", "") else None


def ram_bytes() -> int | None:
    """This machine's RAM (``MemTotal``), None where ``/proc/meminfo`` cannot say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    value, _, unit = line.split(":", 1)[1].strip().partition(" ")
                    return int(value) * 1024 if value.isdigit() and unit == "kB" else None
    except (OSError, ValueError):
        return None
    return None


def usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


@dataclass(frozen=True)
class Hardware:
    """What the launching machine can see; gathered at the edge (``machine/hardware.py``)."""

    gpu_names: tuple[str, ...] = ()
    compute_capabilities: tuple[float | None, ...] = ()  # None: the driver did not say ([N/A])
    cpus: int | None = None  # usable CPU cores; None: not known
    gpu_memory: tuple[int | None, ...] = ()  # bytes per GPU; None: the driver did not say

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_names)


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
