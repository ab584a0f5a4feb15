"""Time to the first optimizer step of the demo job, and where it goes.

Run: ``python bench/first_step.py [--repeats N]``. Launches, N times,

    ftlaunch --procs 2 --zero 2 jobs/sft.py --use_peft --max_steps 10 --logging_steps 1

on the tiny model (2 CPU processes) and splits the time from the command to the first logged step
(step 1: its forward, backward and optimizer step) by the moments rank 0 records in the run folder:
``run.json`` (created), ``status.json`` (started), ``attempts/1/progress.json`` (each phase, with the
time it was written; the file is rewritten, so it is read every 50 ms while the launch runs) and
the first record of ``metrics.jsonl``. Prints each part in seconds (median over the launches) and
as a share of the total. One untimed launch first (page cache, tiny model folder).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    REPO,
    PhaseWatcher,
    ftlaunch,
    machine,
    median,
    metrics,
    only_run,
    read_json,
    tiny_env,
    versions,
)

COMMAND = ["--procs", "2", "--zero", "2", "jobs/sft.py", "--use_peft", "--max_steps", "10"]
QUIET = ["--logging_steps", "1", "--report_to", "none"]  # a loss per step; no tracker is installed here
# (part, the moment that ends it); each part starts where the one before ended, the first at the command.
PARTS = (
    ("ftlaunch CLI: interpreter, parse, pre-flight, plan, run folder", "created"),
    ("environment record, supervisor start", "started"),
    ("accelerate launch + torchrun + rank interpreters", "loading libraries"),
    ("entry: import transformers/deepspeed, DeepSpeed comm (gloo), guards", "running the recipe"),
    ("recipe: import trl, parse arguments, build SFTConfig", "loading the model"),
    ("model load + data + SFTTrainer (tokenise, LoRA)", "preparing the trainer"),
    ("train(): DeepSpeed init, optimizer, dataloader", "training"),
    ("first step (forward, backward, optimizer step, log)", "first step"),
)


def launch(work: Path, tag: str, env: dict[str, str]) -> dict[str, float]:
    """One launch; the moments of PARTS as seconds since the command started."""
    runs = work / f"runs-{tag}"
    runs.mkdir()
    start = time.time()
    with PhaseWatcher(runs) as watcher:
        subprocess.run(
            ftlaunch("--runs-dir", str(runs), *COMMAND, *QUIET),
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    run_dir = only_run(runs)
    attempt = run_dir / "attempts" / "1"
    losses = [r["time"] for r in metrics(attempt) if "loss" in r]
    moments = {
        "created": read_json(run_dir / "run.json").get("created"),
        "started": read_json(attempt / "status.json").get("started"),
        "loading libraries": watcher.first("loading libraries"),
        "running the recipe": watcher.first("running the recipe"),
        "loading the model": watcher.first("loading the model"),
        "preparing the trainer": watcher.first("preparing the trainer"),
        "training": watcher.last.get("started"),
        "first step": losses[0] if losses else None,
    }
    missing = [name for name, t in moments.items() if not isinstance(t, (int, float))]
    if missing:
        sys.exit(f"first_step: the run folder {run_dir} did not record: {', '.join(missing)}")
    return {name: float(t) - start for name, t in moments.items() if isinstance(t, (int, float))}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed launches (default 3)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first launch")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ftlaunch-bench-first-step-"))
    env = tiny_env(work)
    print(f"first_step: {machine()}; {versions()}")
    print(f"command: ftlaunch {' '.join(COMMAND + QUIET)}")
    if not ns.no_warmup:
        launch(work, "warmup", env)
    runs = []
    for i in range(ns.repeats):
        runs.append(launch(work, str(i), env))
        print(f"launch {i + 1}/{ns.repeats}: first step at {runs[-1]['first step']:.2f} s", flush=True)
    # Median of each part's own duration (the medians of the moments need not add up).
    durations: dict[str, list[float]] = {part: [] for part, _ in PARTS}
    for moments in runs:
        previous = 0.0
        for part, moment in PARTS:
            durations[part].append(moments[moment] - previous)
            previous = moments[moment]
    parts = {part: median(values) for part, values in durations.items()}
    total = sum(parts.values())
    print(f"\n{'part (median over ' + str(len(runs)) + ' launches)':<72}{'s':>7}{'share':>8}")
    for part, seconds in parts.items():
        print(f"{part:<72}{seconds:>7.2f}{seconds / total:>8.1%}")
    print(f"{'total: command to first step (sum of the parts)':<72}{total:>7.2f}")
    print(f"{'       median of the measured totals':<72}{median([m['first step'] for m in runs]):>7.2f}")
    startup = sum(list(parts.values())[:5])
    print(
        f"\ninterpreters + imports + parsing (the first five parts): {startup:.2f} s = {startup / total:.0%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
