"""``ftlaunch env``: the facts of this machine and the installed libraries, as text or JSON."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from launcher.errors import Parser
from launcher.machine.envreport import gather, json_text, render

# ---------------------------------------------------------------- the subcommand


def env_command(argv: list[str]) -> int:
    parser = Parser(
        prog="ftlaunch env",
        description="What this machine runs with: the versions of the training stack (read from the "
        "installed packages, nothing is imported), the GPUs and their compute capability, which "
        "DeepSpeed ops are built, whether SLURM answers, and the NCCL_*, TORCH_*, "
        "CUDA_VISIBLE_DEVICES, MASTER_*, GLOO_* and OMP_NUM_THREADS variables (secrets never shown). "
        "Every launch records the same facts in its attempt's environment.json.",
        epilog="examples:\n  ftlaunch env\n  ftlaunch env --json > env.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    ns = parser.parse_args(argv)
    found = gather(os.environ)
    show: Callable[[Mapping[str, Any]], str] = json_text if ns.json else render
    sys.stdout.write(show(found))
    return 0
