"""Start-up time of ftlaunch against ``accelerate launch --help``, measured side by side.

Run: ``python bench/startup.py [--repeats N]``. Prints the median wall time of each command and
its ratio to accelerate's help (lower is better; the goal is well under a second for ftlaunch).
The commands: ``--help``, a ZeRO-3 dry run, a ``--zero auto`` dry run sized from the tiny model's
``config.json`` (written from ``jobs/make_tiny.py``'s architecture; no weights needed), ``ftlaunch
status`` (no runs) and ``ftlaunch check jobs/sft.py`` (the pre-flight every launch runs).
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, bytecode_as_installed


def median_seconds(argv: list[str], repeat: int, cwd: Path) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_config() -> dict[str, object]:
    """The tiny model's ``config.json`` as ``--zero auto`` reads it (its weights are not needed)."""
    tiny = runpy.run_path(str(REPO / "jobs" / "make_tiny.py"))  # the recipes' folder is not a package
    return {"model_type": "qwen2", **tiny["ARCHITECTURE"], "vocab_size": tiny["VOCAB_SIZE"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", "--repeat", type=int, default=5, help="runs of each command (default 5)")
    ns = parser.parse_args()
    bytecode_as_installed()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "recipe.py").write_text("pass\n")
        (cwd / "config.json").write_text(json.dumps(tiny_config()))
        ftl = [py, "-m", "launcher"]
        commands = {
            "accelerate launch --help": [py, "-m", "accelerate.commands.launch", "--help"],
            "ftlaunch --help": [*ftl, "--help"],
            "ftlaunch --gpus 8 --zero 3 --dry-run recipe.py": [
                *ftl,
                *["--gpus", "8", "--zero", "3", "--dry-run", "recipe.py"],
            ],
            "ftlaunch --procs 2 --zero auto --model (tiny) --dry-run": [
                *ftl,
                *["--procs", "2", "--zero", "auto", "--model", "config.json", "--dry-run", "recipe.py"],
            ],
            "ftlaunch status (no runs)": [*ftl, "status"],
            "ftlaunch check jobs/sft.py": [*ftl, "check", str(REPO / "jobs" / "sft.py")],
        }
        results = {name: median_seconds(argv, ns.repeats, cwd) for name, argv in commands.items()}
    base = results["accelerate launch --help"]
    print(f"{'command':<58} {'median s':>9} {'vs accelerate':>14}")
    for name, seconds in results.items():
        print(f"{name:<58} {seconds:>9.3f} {seconds / base:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
