"""How long each restart of a run took, read from its run folder: from the end of the attempt
before it to its own first step, against the first attempt's time from its start to its first
step (a fresh start). For a SLURM run this shows what a restart in place saves over a requeue.

Run: ``python bench/restart_times.py RUN_DIR`` (e.g. the run folder the SLURM fault test leaves
under pytest's temporary folder, ``tests/slurm/test_faults.py``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from benchlib import metrics, read_json


def first_step(attempt: Path) -> float | None:
    times = [float(r["time"]) for r in metrics(attempt) if "loss" in r]
    return min(times) if times else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    attempts = sorted((parser.parse_args().run_dir / "attempts").iterdir(), key=lambda p: int(p.name))
    status = {a: read_json(a / "status.json") for a in attempts}
    began = first_step(attempts[0])
    if began is None or "started" not in status[attempts[0]]:
        print("the first attempt made no step", file=sys.stderr)
        return 1
    fresh = began - float(status[attempts[0]]["started"])
    print(f"attempt 1: fresh start to first step {fresh:.1f} s")
    for before, after in itertools.pairwise(attempts):
        ended, stepped = status[before].get("ended"), first_step(after)
        if ended is None or stepped is None:
            continue
        slurm = status[after].get("backend") == "slurm"
        how = "in place" if status[after].get("in_place") else "requeued" if slurm else "restarted"
        if not status[after].get("restart"):
            how = "resumed after a pre-emption"
        took = stepped - float(ended)
        cause = str(status[before].get("state", "?"))
        print(f"attempt {after.name} ({how}, after {cause}): {took:.1f} s, {took / fresh:.2f}x a fresh start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
