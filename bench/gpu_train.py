"""Throughput, peak memory and MFU of the SFT recipe on GPUs under ZeRO-0..3, against ``ftlaunch estimate``.

Run on a machine with NVIDIA GPUs: ``python bench/gpu_train.py [--gpus N] [--stages 0,1,2,3]``.
On a machine without any it refuses (exit 2): nothing here means anything on a CPU.

The model: a randomly initialised Qwen2 with Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads,
2 KV heads, intermediate 4864, vocabulary 151,936, tied embeddings; 494M parameters), built from a
config with ``from_config`` (no hub) and saved with the tiny model's tokenizer (``jobs/make_tiny.py``;
its 500 token ids are a subset of the model's vocabulary). The data: generated conversations longer
than ``--seq-len`` tokens, so every sequence is truncated to exactly ``--seq-len`` (no padding). Each
stage runs ``jobs/sft.py`` (full fine-tuning, bf16, TRL's defaults otherwise: fp32 weights loaded,
gradient checkpointing on) under

    ftlaunch --gpus N --zero S --micro-batch M --grad-accum 1 --precision bf16 ...

through a small wrapper that records each rank's ``torch.cuda.max_memory_allocated`` /
``max_memory_reserved`` at the end of training; ``nvidia-smi`` is sampled every second for the whole
process footprint. Reported per stage:

- tokens/s (all GPUs; TRL's logged ``num_tokens`` over the steps after ``--skip`` warm-up steps);
- MFU: tokens/s x (6 x parameters + 12 x layers x hidden x seq) / (GPUs x peak dense bf16 FLOP/s),
  the PaLM convention (recomputation by checkpointing is not counted as useful work);
- peak memory per GPU (max over ranks) and ``ftlaunch estimate``'s total/GPU for the same run, with
  the estimate's error against the nvidia-smi peak (what the estimate claims to cover: it includes
  2 GiB for the CUDA context and NCCL) and against ``max_memory_allocated``.

Results are printed and appended to ``bench/results/gpu-YYYY-MM-DD.md`` with the date, the GPUs
(``nvidia-smi``) and the versions (``ftlaunch env --json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from benchlib import JOBS, REPO, ftlaunch, metrics, only_run, tiny_env

GIB = 2**30
# Qwen2.5-0.5B's shape; random weights.
ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
# Dense bf16 tensor-core peak, TFLOP/s per GPU (vendor data sheets, SXM parts); others: --peak-tflops.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}
RESULTS = REPO / "bench" / "results"

BUILD = """
import json, sys, torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
out, tiny, arch = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
torch.manual_seed(0)
model = Qwen2ForCausalLM(Qwen2Config(**arch))
model.save_pretrained(out)
AutoTokenizer.from_pretrained(tiny).save_pretrained(out)
json.dump({"parameters": model.num_parameters()}, open(out + "/bench_model.json", "w"))
"""

# Runs jobs/sft.py unchanged; a callback added to transformers' defaults records the rank's peaks.
WRAPPER = """
import json, os, runpy, sys
sys.path.insert(0, {jobs!r})
import torch
import transformers.trainer
from transformers import TrainerCallback

class Peaks(TrainerCallback):
    def on_train_end(self, args, state, control, **kwargs):
        rank = int(os.environ.get("RANK", "0"))
        with open(os.path.join({out!r}, f"rank{{rank}}.json"), "w") as f:
            json.dump({{"allocated": torch.cuda.max_memory_allocated(),
                       "reserved": torch.cuda.max_memory_reserved()}}, f)

transformers.trainer.DEFAULT_CALLBACKS.append(Peaks)
sys.argv[0] = {recipe!r}
runpy.run_path({recipe!r}, run_name="__main__")
"""


def gpus_here() -> tuple[str, ...]:
    from launcher.machine.hardware import probe

    return probe().gpu_names


def build_model(work: Path, env: dict[str, str]) -> tuple[Path, int]:
    model = work / "model"
    subprocess.run(
        [sys.executable, "-c", BUILD, str(model), str(work / "tiny"), json.dumps(ARCHITECTURE)],
        cwd=REPO,
        env=env,
        check=True,
    )
    return model, int(json.loads((model / "bench_model.json").read_text())["parameters"])


def write_data(path: Path, rows: int, seq_len: int) -> None:
    """Arithmetic stories (the tiny tokenizer's own vocabulary), each far longer than ``seq_len``."""
    with path.open("w") as f:
        for i in range(rows):
            sentences = [
                f"Tom has {i + k} apples and buys {k % 9 + 1} more, so he has {i + k + k % 9 + 1}."
                for k in range(seq_len // 4 + 16)
            ]
            messages = [
                {"role": "user", "content": f"Tell story {i}."},
                {"role": "assistant", "content": " ".join(sentences)},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")


class SmiSampler:
    """The largest ``memory.used`` nvidia-smi reports per GPU while the launch runs (every second)."""

    def __init__(self) -> None:
        self.peak: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SmiSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            used = [int(v) * 2**20 for v in out.split() if v.isdigit()]
            self.peak = (
                [max(a, b) for a, b in zip(self.peak, used, strict=True)]
                if len(self.peak) == len(used)
                else used
            )


def estimate_totals(model: Path, ns: argparse.Namespace) -> dict[int, float]:
    """``ftlaunch estimate``'s total/GPU (GiB) per ZeRO stage, without offload."""
    argv = ftlaunch(
        "estimate", "--model", str(model), "--gpus", str(ns.gpus), "--seq-len", str(ns.seq_len),
        "--micro-batch", str(ns.micro_batch), "--gradient-checkpointing", "--precision", "bf16",
    )  # fmt: skip
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True).stdout
    totals = {}
    for line in out.splitlines():
        # "ZeRO-2   params grads optim gather activ other total ..."; the offload rows do not match
        match = re.match(r"ZeRO-(\d)(?: \(DDP\))?\s+((?:[0-9.]+\s+){6}[0-9.]+)", line)
        if match:
            totals[int(match.group(1))] = float(match.group(2).split()[6])
    return totals


def run_stage(
    stage: int, model: Path, data: Path, work: Path, env: dict[str, str], ns: argparse.Namespace
) -> dict[str, Any]:
    peaks = work / f"peaks-z{stage}"
    peaks.mkdir()
    recipe = work / f"sft_with_peaks_z{stage}.py"
    recipe.write_text(WRAPPER.format(jobs=str(JOBS), out=str(peaks), recipe=str(JOBS / "sft.py")))
    runs = work / f"runs-z{stage}"
    argv = ftlaunch(
        "--runs-dir", str(runs), "--gpus", str(ns.gpus), "--zero", str(stage),
        "--micro-batch", str(ns.micro_batch), "--grad-accum", "1", "--precision", "bf16",
        str(recipe), "--model_name_or_path", str(model), "--dataset_name", str(data),
        "--max_length", str(ns.seq_len), "--max_steps", str(ns.steps), "--logging_steps", "1",
        "--report_to", "none",
    )  # fmt: skip
    print(f"ZeRO-{stage}: {' '.join(argv[2:])}", flush=True)
    with SmiSampler() as smi:
        code = subprocess.run(argv, cwd=REPO, env=env, check=False).returncode
    result: dict[str, Any] = {"stage": stage, "exit": code, "smi_peak": max(smi.peak, default=0)}
    if code != 0:
        return result
    records = [r for r in metrics(only_run(runs) / "attempts" / "1") if "loss" in r]
    timed = [r for r in records if r["step"] > ns.skip]
    if len(timed) >= 2:
        first, last = timed[0], timed[-1]
        seconds = last["time"] - first["time"]
        if "num_tokens" in first and "num_tokens" in last:
            tokens = last["num_tokens"] - first["num_tokens"]
        else:  # every sequence is exactly seq_len tokens
            tokens = (last["step"] - first["step"]) * ns.micro_batch * ns.gpus * ns.seq_len
        result["tokens_per_s"] = tokens / seconds
    ranks = [json.loads(p.read_text()) for p in peaks.glob("rank*.json")]
    result["allocated"] = max((r["allocated"] for r in ranks), default=0)
    result["reserved"] = max((r["reserved"] for r in ranks), default=0)
    return result


def peak_tflops(names: tuple[str, ...], given: float | None) -> float | None:
    if given is not None:
        return given
    for key, value in PEAK_TFLOPS.items():
        if names and all(key in name for name in names):
            return value
    return None


def report(
    results: list[dict[str, Any]],
    estimates: dict[int, float],
    header: str,
    flops_per_token: float,
    peak: float | None,
    gpus: int,
) -> str:
    lines = [
        header,
        "",
        "| ZeRO | tokens/s | tokens/s/GPU | MFU | max allocated GiB | max reserved GiB | nvidia-smi peak GiB "
        "| estimate GiB | estimate vs nvidia-smi | estimate vs allocated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["exit"] != 0:
            lines.append(f"| {r['stage']} | failed (exit {r['exit']}) | | | | | | | | |")
            continue
        tps = r.get("tokens_per_s") or 0.0
        mfu = f"{tps * flops_per_token / (gpus * peak * 1e12):.1%}" if tps and peak else "-"
        est = estimates.get(r["stage"])
        smi, alloc = r["smi_peak"] / GIB, r["allocated"] / GIB
        cells = [
            str(r["stage"]),
            f"{tps:,.0f}",
            f"{tps / gpus:,.0f}",
            mfu,
            f"{alloc:.1f}",
            f"{r['reserved'] / GIB:.1f}",
            f"{smi:.1f}",
            "-" if est is None else f"{est:.1f}",
            f"{(est - smi) / smi:+.0%}" if est is not None and smi else "-",
            f"{(est - alloc) / alloc:+.0%}" if est is not None and alloc else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: all nvidia-smi shows)")
    parser.add_argument("--stages", default="0,1,2,3", help="ZeRO stages to run (default 0,1,2,3)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per stage (default 30)")
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of tokens/s (default 5)")
    parser.add_argument("--micro-batch", type=int, default=4, help="sequences per GPU per step (default 4)")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence (default 1024)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per GPU for MFU")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (model, data, run folders)")
    ns = parser.parse_args()
    names = gpus_here()
    if not names:
        print(
            "gpu_train: this machine has no NVIDIA GPU (nvidia-smi shows none); the benchmark measures GPU "
            "training and means nothing on CPUs. Run it on a GPU machine.",
            file=sys.stderr,
        )
        return 2
    ns.gpus = ns.gpus or len(names)
    if ns.gpus > len(names):
        print(f"gpu_train: --gpus {ns.gpus} but nvidia-smi shows {len(names)}", file=sys.stderr)
        return 2
    stages = [int(s) for s in ns.stages.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ftlaunch-bench-gpu-"))
    env = tiny_env(work)
    model, parameters = build_model(work, env)
    data = work / "long_chats.jsonl"
    write_data(data, max(64, (ns.steps + 1) * ns.micro_batch * ns.gpus), ns.seq_len)
    estimates = estimate_totals(model, ns)
    a = ARCHITECTURE
    flops_per_token = 6 * parameters + 12 * a["num_hidden_layers"] * a["hidden_size"] * ns.seq_len
    peak = peak_tflops(names[: ns.gpus], ns.peak_tflops)
    results = [run_stage(stage, model, data, work, env, ns) for stage in stages]

    today = datetime.date.today().isoformat()
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    env_json = subprocess.run(
        ftlaunch("env", "--json"), cwd=REPO, capture_output=True, text=True, check=False
    ).stdout
    libraries = json.loads(env_json).get("libraries", {}) if env_json.strip().startswith("{") else {}
    header = (
        f"## {today}: jobs/sft.py full fine-tuning, random Qwen2 {parameters / 1e6:.0f}M "
        "(Qwen2.5-0.5B shape), "
        f"{ns.gpus} GPU(s), micro {ns.micro_batch} x seq {ns.seq_len}, bf16, gradient checkpointing, "
        f"{ns.steps} steps (first {ns.skip} left out)\n\n"
        f"GPUs: {'; '.join(smi.splitlines()[: ns.gpus])}. Peak for MFU: "
        f"{f'{peak:.0f} TFLOP/s dense bf16 per GPU' if peak else 'unknown (give --peak-tflops)'}.\n"
        f"Versions: {', '.join(f'{k} {v}' for k, v in libraries.items())}.\n"
        f"Command: python bench/gpu_train.py {' '.join(sys.argv[1:])}"
    )
    text = report(results, estimates, header, flops_per_token, peak, ns.gpus)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"gpu-{today}.md"
    with target.open("a") as f:
        f.write(("\n" if target.exists() and target.stat().st_size else "") + text)
    print(f"appended to {target.relative_to(REPO)}")
    if not ns.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
