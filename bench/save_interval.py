"""Checkpoint interval: fixed ``--save-steps 10`` and ``50`` against ``--save-every auto``, side by
side in one run, on the tiny job and on a 44M-parameter model (full fine-tuning, so that a save
writes the weights and Adam's states, ~0.5 GB). The 44M job trains in fp32 with a micro batch of 4:
bf16 on a CPU without bf16 units made its first step take 85 s, and its steps ~10 s. ``--tiny-steps 0``
or ``--big-steps 0`` skips a job.

Run: ``python bench/save_interval.py [--tiny-steps 400] [--big-steps 60]``. Each launch is

    ftlaunch --procs 2 --zero 2 jobs/sft.py --max_steps N ...  (+ --save-steps K | --save-every auto)

and is read from its run folder: the ranks time every save until its completion marker
(``saves.jsonl``) and rank 0 logs every step's time (``metrics.jsonl``). Reported per launch:
- overhead: the time spent saving over the training time (first to last step);
- worst lost: the most a crash could lose, in steps and in seconds (the longest stretch between
  two complete checkpoints, or from the start to the first, with the save in progress).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import REPO, ftlaunch, machine, metrics, only_run, tiny_env, versions

POLICIES = {"save-steps 10": ["--save-steps", "10"], "save-steps 50": ["--save-steps", "50"]}
POLICIES["auto (3%)"] = ["--save-every", "auto"]


def build_big(tiny: Path, out: Path) -> Path:
    """A ~50M-parameter Qwen2 with the tiny model's tokenizer (random weights: only cost matters)."""
    code = f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config
tok = AutoTokenizer.from_pretrained({str(tiny)!r})
config = Qwen2Config(vocab_size=len(tok), hidden_size=512, intermediate_size=1536, num_hidden_layers=14,
    num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True,
    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
print("PARAMS", sum(p.numel() for p in model.parameters()))
model.save_pretrained({str(out)!r}); tok.save_pretrained({str(out)!r})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("PARAMS"))
    print(f"# big model: {int(count) / 1e6:.1f}M parameters", flush=True)
    return out


def measure(runs: Path, max_steps: int) -> dict[str, Any]:
    attempt = only_run(runs) / "attempts" / "1"
    saves = [json.loads(line) for line in (attempt / "saves.jsonl").read_text().splitlines()]
    steps = {r["step"]: r["time"] for r in metrics(attempt) if "loss" in r}
    train = max(steps.values()) - min(steps.values())
    marks = [0, *(s["step"] for s in saves)]
    gaps = [b - a for a, b in itertools.pairwise(marks)] + [max_steps - marks[-1]]
    # The lost time of a stretch: from the step after the last complete save to the next save's end.
    starts = [min(steps.values()), *(s["time"] for s in saves)]
    ends = [s["time"] for s in saves] + [max(steps.values())]
    return {
        "saves": len(saves),
        "overhead": sum(s["seconds"] for s in saves) / train,
        "worst_steps": max(gaps),
        "worst_seconds": max(e - b for b, e in zip(starts, ends, strict=True)),
        "save_seconds": sum(s["seconds"] for s in saves) / max(1, len(saves)),
        "interval": saves[-1].get("interval") if saves else None,
    }


def launch(
    env: dict[str, str], work: Path, model: Path, max_steps: int, policy: list[str], full: bool
) -> Path:
    runs = Path(tempfile.mkdtemp(dir=work))
    train = ["--max_steps", str(max_steps), "--logging_steps", "1", "--report_to", "none"]
    train += ["--model_name_or_path", str(model)] + ([] if full else ["--use_peft"])
    big = ["--precision", "fp32", "--micro-batch", "4"] if full else []
    argv = ftlaunch(
        "--runs-dir",
        str(runs),
        "--procs",
        "2",
        "--zero",
        "2",
        *big,
        *policy,
        str(REPO / "jobs" / "sft.py"),
        *train,
    )
    subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny-steps", type=int, default=400)
    parser.add_argument("--big-steps", type=int, default=60)
    ns = parser.parse_args()
    print(f"# {machine()}; {versions()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = tiny_env(work)
        jobs = [("tiny (LoRA)", work / "tiny", ns.tiny_steps, False)] if ns.tiny_steps > 0 else []
        if ns.big_steps > 0:
            jobs.append(("44M (full)", build_big(work / "tiny", work / "big"), ns.big_steps, True))
        header = f"{'job':<13} {'policy':<14} {'saves':>5} {'save s':>7} {'overhead':>9}"
        print(f"{header} {'worst lost':>18} {'interval':>8}")
        for name, model, steps, full in jobs:
            for label, policy in POLICIES.items():
                found = measure(launch(env, work, model, steps, policy, full), steps)
                lost = f"{found['worst_steps']} st / {found['worst_seconds']:.0f} s"
                print(
                    f"{name:<13} {label:<14} {found['saves']:>5} {found['save_seconds']:>7.2f} "
                    f"{found['overhead']:>8.1%} {lost:>18} {found['interval'] or '-':>8}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
