"""The CPU optimizer step that optimizer offload runs, for each Adam implementation, side by side.

Run: ``python bench/offload_step.py [--repeats N] [--params 50e6] [--threads 2]``. On ~50M fp32
parameters split into tensors shaped like a small model's (an embedding, square projections, norm
vectors), with random gradients, it times ``optimizer.step()`` of

- torch ``AdamW()`` default: on CPU tensors the for-loop implementation (``foreach`` is chosen for
  CUDA tensors only); what transformers' ``optim="adamw_torch"`` gives;
- torch ``AdamW(foreach=True)``;
- torch ``AdamW(fused=True)``: transformers' default ``optim="adamw_torch_fused"`` (torch >= 2.8);
- DeepSpeed's ``DeepSpeedCPUAdam`` (needs its ``cpu_adam`` op: compiled into ``TORCH_EXTENSIONS_DIR``
  on first use, 1-3 minutes; a failed build is reported and the row skipped).

Two warm-up steps each, then N rounds of one step of each (interleaved, so a change in machine
load hits every row alike); prints the median step of each and its ratio to the fused one.

Which one ftlaunch's ``--offload-optimizer cpu`` runs: the trainer's own optimizer. ftlaunch writes
``zero_force_ds_cpu_optimizer: false`` (``launcher/render/deepspeed.py``), so DeepSpeed keeps the
client optimizer transformers built from ``optim``; its default is ``adamw_torch_fused``, so the
fused row runs unless a recipe says ``optim="adamw_torch"`` (the for-loop row).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any


def shapes(total: float) -> list[tuple[int, ...]]:
    """A third in one embedding, most in 8 square projections, a few norm-like vectors: ~``total``."""
    width = int((total * 2 / 3 / 8) ** 0.5)
    embedding_rows = int(total / 3 / width)
    return [(embedding_rows, width), *[(width, width)] * 8, *[(width,)] * 4]


def build(kind: str, params: list[Any], torch: Any) -> Any:
    if kind == "torch AdamW default (for-loop)":
        return torch.optim.AdamW(params, lr=1e-4, foreach=False)
    if kind == "torch AdamW foreach=True":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True)
    if kind == "torch AdamW fused=True":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    return DeepSpeedCPUAdam(params, lr=1e-4, adamw_mode=True)


KINDS = (
    "torch AdamW fused=True",
    "DeepSpeedCPUAdam",
    "torch AdamW default (for-loop)",
    "torch AdamW foreach=True",
)


def timed(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed steps of each (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first (default 2)")
    parser.add_argument("--params", type=float, default=50e6, help="parameters in all (default 50e6)")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads (default 2)")
    parser.add_argument("--skip-deepspeed", action="store_true", help="leave DeepSpeedCPUAdam out (no build)")
    ns = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(ns.threads))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    torch.set_num_threads(ns.threads)
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes(ns.params)]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    count = sum(p.numel() for p in params)
    print(
        f"offload_step: {count / 1e6:.1f}M fp32 parameters in {len(params)} tensors, {ns.threads} threads, "
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores"
    )
    optimizers = {}
    for kind in KINDS:
        if kind == "DeepSpeedCPUAdam" and ns.skip_deepspeed:
            continue
        started = time.perf_counter()
        try:
            optimizers[kind] = build(kind, params, torch)
        except Exception as err:  # any build failure: say why, keep the other rows
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            print(f"{kind}: skipped, it could not be built or loaded: {last}")
            continue
        if kind == "DeepSpeedCPUAdam":
            print(f"{kind}: cpu_adam op ready in {time.perf_counter() - started:.1f} s (build or cache load)")
    for optimizer in optimizers.values():
        for _ in range(ns.warmup):
            optimizer.step()
    times: dict[str, list[float]] = {kind: [] for kind in optimizers}
    for _ in range(ns.repeats):
        for kind, optimizer in optimizers.items():
            times[kind].append(timed(optimizer.step))
    medians = {kind: statistics.median(t) for kind, t in times.items()}
    base = medians.get("torch AdamW fused=True")
    print(f"\n{'optimizer':<34}{'median ms':>10}{'min ms':>8}{'vs fused':>10}")
    for kind, seconds in medians.items():
        ratio = f"{seconds / base:>9.2f}x" if base else f"{'-':>10}"
        print(f"{kind:<34}{seconds * 1e3:>10.1f}{min(times[kind]) * 1e3:>8.1f}{ratio}")
    print(
        "\nftlaunch --offload-optimizer cpu runs the trainer's optimizer (zero_force_ds_cpu_optimizer: "
        "false): transformers' default optim adamw_torch_fused = the fused row; optim='adamw_torch' = the "
        "for-loop row."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
