"""Start-up time of ftlaunch against ``accelerate launch --help``, measured side by side.

Run: ``python bench/startup.py [--repeat N]``. Prints the median wall time of each command and
its ratio to accelerate's help (lower is better; the goal is well under a second for ftlaunch).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_seconds(argv: list[str], repeat: int, cwd: Path) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    ns = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "recipe.py").write_text("pass\n")
        commands = {
            "accelerate launch --help": [py, "-m", "accelerate.commands.launch", "--help"],
            "ftlaunch --help": [py, "-m", "launcher", "--help"],
            "ftlaunch --gpus 8 --zero 3 --dry-run recipe.py": [
                py,
                "-m",
                "launcher",
                "--gpus",
                "8",
                "--zero",
                "3",
                "--dry-run",
                "recipe.py",
            ],
        }
        results = {name: median_seconds(argv, ns.repeat, cwd) for name, argv in commands.items()}
    base = results["accelerate launch --help"]
    print(f"{'command':<50} {'median s':>9} {'vs accelerate':>14}")
    for name, seconds in results.items():
        print(f"{name:<50} {seconds:>9.3f} {seconds / base:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
