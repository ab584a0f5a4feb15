"""What ftlaunch costs over a hand-written ``accelerate launch`` of the same job, measured side by side.

Run: ``python bench/launch_overhead.py [--repeats N] [--steps S]``. The job: ``jobs/sft.py --use_peft``
on the tiny model, 2 CPU processes, ZeRO-2, micro batch 2 x accumulation 2, S optimizer steps, the
recipe's precision (TRL's default bf16) both ways:

    ftlaunch --procs 2 --zero 2 --micro-batch 2 --grad-accum 2 jobs/sft.py --use_peft ...
    accelerate launch --config_file accelerate_configs/zero2.yaml --num_processes 2 \\
        --main_process_port 0 jobs/sft.py --use_peft --per_device_train_batch_size 2 \\
        --gradient_accumulation_steps 2 ...

(the committed preset, as ``tests/e2e/test_train.py`` launches it). One untimed warm-up of each
first (DeepSpeed compiles its ``deepspeed_shm_comm`` op on the first plain launch; the page cache
fills), then N interleaved pairs (ftlaunch, accelerate, ftlaunch, ...). Per pair: wall and CPU time
(the children's rusage) and their ratios; then the medians, the same three segments of both runs
(start to the first logged step, training, last step to exit) and ftlaunch's own phases from its
run folder, so that any difference has a place. With ``--trace`` a ``sitecustomize`` on
``PYTHONPATH`` (the same for both launches) also notes when every Python process starts and reaches
``atexit`` and its CPU time, which compares the moments both launches share (``accelerate launch``
starts, the ranks start and end) and shows what the ftlaunch process itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchlib import (
    REPO,
    PhaseWatcher,
    accelerate_launch,
    ftlaunch,
    machine,
    median,
    metrics,
    only_run,
    read_json,
    tiny_env,
    versions,
)

BATCH = ["--micro-batch", "2", "--grad-accum", "2"]
SAME_BATCH = ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"]
PRESET = [
    "--config_file",
    "accelerate_configs/zero2.yaml",
    "--num_processes",
    "2",
    "--main_process_port",
    "0",
]
OP_LOAD = re.compile(r"Time to load (\S+) op: ([0-9.]+) seconds")
# With --trace: every Python process of both launches notes when it started and when it reached
# atexit (a sitecustomize on PYTHONPATH, the same for both), so the shared moments can be compared.
TRACER = """
import atexit, json, os, resource, time
def _note(event):
    with open(os.environ["BENCH_TRACE_FILE"], "a") as f:
        cmd = open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        note = {"pid": os.getpid(), "event": event, "time": time.time(), "cmd": cmd, "cpu": cpu}
        f.write(json.dumps(note) + "\\n")
if os.environ.get("BENCH_TRACE_FILE"):
    _note("start")
    atexit.register(_note, "exit")
"""
LOSS_LOG = re.compile(r"[{ ]'loss': ")  # the trainer's per-step log line, as transformers prints it


@dataclass
class Run:
    """One launch: its wall and CPU seconds, and the moments (epoch seconds) it passed."""

    wall: float
    cpu: float
    start: float
    end: float
    first_step: float | None = None  # the first logged loss (logging every step: step 1)
    last_log: float | None = None  # the trainer's closing log (train_runtime)
    marks: dict[str, float] = field(default_factory=dict)  # ftlaunch's own moments, in order
    processes: dict[str, float] = field(default_factory=dict)  # with --trace: shared moments
    op_loads: dict[str, float] = field(default_factory=dict)  # DeepSpeed ops loaded, seconds each

    def segments(self) -> dict[str, float]:
        nan = float("nan")
        first = self.first_step if self.first_step is not None else nan
        last = self.last_log if self.last_log is not None else nan
        return {
            "start -> first step": first - self.start,
            "training": last - first,
            "last log -> exit": self.end - last,
        }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(
    argv: list[str], env: dict[str, str], lines: list[tuple[float, str]]
) -> tuple[float, float, float, float]:
    """Run to the end, keeping every output line with the time it arrived; (wall, cpu, start, end)."""
    cpu0, start, t0 = children_cpu(), time.time(), time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    reader = threading.Thread(target=collect, args=(proc.stdout, lines), daemon=True)
    reader.start()
    code = proc.wait()
    wall, end = time.perf_counter() - t0, time.time()
    reader.join()
    if code != 0:
        tail = "".join(line for _, line in lines[-30:])
        sys.exit(f"launch_overhead: {' '.join(argv[1:4])} ... exited {code}:\n{tail}")
    return wall, children_cpu() - cpu0, start, end


def collect(stream: IO[str] | None, lines: list[tuple[float, str]]) -> None:
    assert stream is not None
    for line in stream:
        lines.append((time.time(), line))


def op_loads(lines: list[tuple[float, str]]) -> dict[str, float]:
    found: dict[str, float] = {}
    for _, line in lines:
        match = OP_LOAD.search(line)
        if match:
            found[match.group(1)] = max(found.get(match.group(1), 0.0), float(match.group(2)))
    return found


def traced(env: dict[str, str], work: Path, name: str, trace: bool) -> dict[str, str]:
    if not trace:
        return env
    tracer = work / "tracer"
    tracer.mkdir(exist_ok=True)
    (tracer / "sitecustomize.py").write_text(TRACER)
    path = [str(tracer), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(path), "BENCH_TRACE_FILE": str(work / f"trace-{name}.jsonl")}


def process_moments(env: dict[str, str]) -> dict[str, float]:
    """From the trace: when ``accelerate launch`` and the ranks started and reached atexit."""
    path = Path(env.get("BENCH_TRACE_FILE", "/nonexistent"))
    notes = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def kind(cmd: str) -> str:
        if "accelerate.commands.launch" in cmd:
            return "accelerate launch"
        if "launcher.rank.entry" in cmd:
            return "rank"
        if "-m launcher " in cmd:
            return "ftlaunch CLI"  # its command line names the recipe too
        return "rank" if "sft.py" in cmd else "other"

    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[str, float] = {}
    for note in notes:
        times.setdefault((kind(note["cmd"]), note["event"]), []).append(note["time"])
        if note["event"] == "exit":
            cpu[kind(note["cmd"])] = cpu.get(kind(note["cmd"]), 0.0) + note["cpu"]
    found = {
        "accelerate launch starts": min(times.get(("accelerate launch", "start"), [])),
        "both ranks started": max(times.get(("rank", "start"), [])),
        "both ranks at atexit": max(times.get(("rank", "exit"), [])),
        "accelerate launch at atexit": max(times.get(("accelerate launch", "exit"), [])),
    }  # an empty list would raise: the trace then failed, and --trace said to use it
    # CPU seconds each kind of process used itself, up to atexit (not in the wall moments above)
    return {**found, **{f"CPU s: {name}": seconds for name, seconds in sorted(cpu.items())}}


def run_ftlaunch(work: Path, tag: str, env: dict[str, str], train: list[str], trace: bool = False) -> Run:
    runs = work / f"runs-{tag}"
    argv = ftlaunch("--runs-dir", str(runs), "--procs", "2", "--zero", "2", *BATCH, "jobs/sft.py", *train)
    lines: list[tuple[float, str]] = []
    runs.mkdir()
    env = traced(env, work, f"ftlaunch-{tag}", trace)
    with PhaseWatcher(runs) as watcher:
        wall, cpu, start, end = run(argv, env, lines)
    run_dir = only_run(runs)
    attempt = run_dir / "attempts" / "1"
    records = metrics(attempt)
    losses = [r["time"] for r in records if "loss" in r]
    closing = [r["time"] for r in records if "train_runtime" in r]
    status = read_json(attempt / "status.json")
    done = read_json(attempt / "done" / "rank0.json")
    marks = {
        "run folder written (CLI: parse, pre-flight, plan)": read_json(run_dir / "run.json").get("created"),
        "supervisor starts (environment.json, status)": status.get("started"),
        "rank 0 entry runs (accelerate launch, torchrun, interpreter)": watcher.first("loading libraries"),
        "recipe starts (entry: imports, DeepSpeed comm, guards)": watcher.first("running the recipe"),
        "trainer arguments built (recipe: imports, parsing)": watcher.first("loading the model"),
        "trainer built (model, data, SFTTrainer)": watcher.first("preparing the trainer"),
        "training begins (DeepSpeed init, optimizer)": watcher.last.get("started"),
        "first step logged": losses[0] if losses else None,
        "last log (train_runtime)": closing[-1] if closing else None,
        "rank 0 done marker (save_model, end of recipe)": done.get("finished"),
        "status ended (ranks exited, verdict)": status.get("ended"),
    }
    found = {name: float(t) for name, t in marks.items() if isinstance(t, (int, float))}
    return Run(
        wall,
        cpu,
        start,
        end,
        losses[0] if losses else None,
        closing[-1] if closing else None,
        found,
        process_moments(env) if trace else {},
        op_loads(node_log(attempt)),  # the console shows rank 0 only, filtered; the log has it all
    )


def node_log(attempt: Path) -> list[tuple[float, str]]:
    path = attempt / "logs" / "node0.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [(0.0, line) for line in text.splitlines()]


def run_accelerate(work: Path, tag: str, env: dict[str, str], train: list[str], trace: bool = False) -> Run:
    out = work / f"out-{tag}"
    argv = accelerate_launch(*PRESET, "jobs/sft.py", *train, *SAME_BATCH, "--output_dir", str(out))
    lines: list[tuple[float, str]] = []
    env = traced(env, work, f"accelerate-{tag}", trace)
    wall, cpu, start, end = run(argv, env, lines)
    losses = [t for t, line in lines if LOSS_LOG.search(line)]
    closing = [t for t, line in lines if "'train_runtime'" in line]
    return Run(
        wall,
        cpu,
        start,
        end,
        losses[0] if losses else None,
        closing[-1] if closing else None,
        processes=process_moments(env) if trace else {},
        op_loads=op_loads(lines),
    )


def report(pairs: list[tuple[Run, Run]]) -> None:
    columns = ("pair", "ftlaunch s", "accelerate s", "wall ratio", "ftl cpu s", "acc cpu s", "cpu ratio")
    print("\n" + "".join(f"{c:>13}" for c in columns))
    rows = [
        (str(i), [f.wall, a.wall, f.wall / a.wall, f.cpu, a.cpu, f.cpu / a.cpu])
        for i, (f, a) in enumerate(pairs, 1)
    ]
    medians = [median([values[k] for _, values in rows]) for k in range(6)]
    for label, values in [*rows, ("median", medians)]:
        print(f"{label:>13}" + "".join(f"{v:>13.3f}" for v in values))
    wall_ratio, cpu_ratio = medians[2], medians[5]
    print(f"CPU ratio (children's user + system time, median of per-pair ratios): {cpu_ratio:.3f}")
    print(f"\nwall ratio ftlaunch / accelerate (median of per-pair ratios): {wall_ratio:.3f} (goal <= 1.03)")

    print(f"\n{'segment (median s)':<28}{'ftlaunch':>10}{'accelerate':>12}{'difference':>12}")
    for name in pairs[0][0].segments():
        ftl = median([p[0].segments()[name] for p in pairs])
        acc = median([p[1].segments()[name] for p in pairs])
        print(f"{name:<28}{ftl:>10.2f}{acc:>12.2f}{ftl - acc:>+12.2f}")

    print("\nftlaunch's moments (median s since the command started, and since the moment before):")
    names = list(pairs[0][0].marks)
    previous = 0.0
    for name in names:
        at = median([f.marks[name] - f.start for f, _ in pairs if name in f.marks])
        print(f"  {at:6.2f}  +{at - previous:5.2f}  {name}")
        previous = at
    exit_at = median([f.end - f.start for f, _ in pairs])
    print(f"  {exit_at:6.2f}  +{exit_at - previous:5.2f}  ftlaunch exits (verdict printed)")

    if pairs[0][0].processes:
        print("\nshared moments, --trace (median s since the command started):")
        print(f"  {'':<34}{'ftlaunch':>10}{'accelerate':>12}{'difference':>12}")
        moments = [m for m in pairs[0][0].processes if not m.startswith("CPU s")]
        for name in [*moments, "first step logged", "last log (train_runtime)", "command exits"]:
            ftl, acc = (median([shared(p[i], name) - p[i].start for p in pairs]) for i in (0, 1))
            print(f"  {name:<34}{ftl:>10.2f}{acc:>12.2f}{ftl - acc:>+12.2f}")
        print("CPU seconds each kind of process used itself, up to its atexit (median; ranks summed):")
        for index, label in ((0, "ftlaunch"), (1, "accelerate")):
            kinds = sorted({k for p in pairs for k in p[index].processes if k.startswith("CPU s")})
            text = ", ".join(
                f"{k[7:]} {median([p[index].processes.get(k, 0.0) for p in pairs]):.2f}" for k in kinds
            )
            print(f"  under {label}: {text}")

    for label, index in (("ftlaunch", 0), ("accelerate", 1)):
        loads: dict[str, list[float]] = {}
        for p in pairs:
            for op, seconds in p[index].op_loads.items():
                loads.setdefault(op, []).append(seconds)
        if loads:
            text = ", ".join(f"{op} {median(s):.2f} s" for op, s in loads.items())
            print(f"DeepSpeed ops loaded under {label} (median, per rank 0): {text}")


def shared(run: Run, name: str) -> float:
    nan = float("nan")
    if name == "first step logged":
        return run.first_step if run.first_step is not None else nan
    if name == "last log (train_runtime)":
        return run.last_log if run.last_log is not None else nan
    return run.end if name == "command exits" else run.processes[name]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs to time (default 5)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run (default 10)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first launch of each")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also note when every Python process starts and reaches atexit (a sitecustomize on PYTHONPATH, "
        "both launches alike) and compare those moments",
    )
    ns = parser.parse_args()
    train = ["--use_peft", "--max_steps", str(ns.steps), "--logging_steps", "1", "--report_to", "none"]
    work = Path(tempfile.mkdtemp(prefix="ftlaunch-bench-overhead-"))
    env = tiny_env(work)
    print(f"launch_overhead: {machine()}; {versions()}; work folder {work}")
    if not ns.no_warmup:
        print("warm-up (untimed): one launch of each ...", flush=True)
        run_accelerate(work, "warmup", env, train)
        run_ftlaunch(work, "warmup", env, train)
    pairs = []
    for i in range(ns.repeats):
        f = run_ftlaunch(work, str(i), env, train, ns.trace)
        a = run_accelerate(work, str(i), env, train, ns.trace)
        print(f"pair {i + 1}/{ns.repeats}: ftlaunch {f.wall:.2f} s, accelerate {a.wall:.2f} s", flush=True)
        pairs.append((f, a))
    report(pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
