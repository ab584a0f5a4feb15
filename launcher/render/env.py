"""Environment variables the launch itself decides, rendered with the configs so every backend and
every node sets the same ones.

On CPU, DeepSpeed must be told its accelerator (it would otherwise probe for CUDA) and no GPU may
leak in. torchrun prefixes each output line with the *global* rank, so a node's log is readable on
its own and ``ftlaunch logs --rank R`` can pick one rank out of any node's log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.spec.decided import Resolved


RANK_PREFIX = "[rank${rank}]:"


def render_env(resolved: Resolved) -> dict[str, str]:
    env = {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX, "PYTHONUNBUFFERED": "1"}
    if resolved.spec.topology.on_cpu:
        env |= {"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    return env
