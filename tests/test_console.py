"""The console filter, fed lines as torchrun's tee really writes them (taken from a 2-process ZeRO-3
GRPO launch and a crashing one); the real launches are in tests/e2e/test_train.py."""

from __future__ import annotations

import errno
import io
import json
import time
from pathlib import Path

from launcher.records import rundir
from launcher.run import console, lines
from launcher.run.console import Screen

SITE = "/work/.venv/lib/python3.11/site-packages"
GATHER = (
    f"{SITE}/torch/distributed/c10d_logger.py:83: FutureWarning: `torch.distributed.all_gather_into_tensor`"
    " is deprecated. Please use `torch.distributed.all_gather_single` instead."
)
SOURCE_LINE = "  return func(*args, **kwargs)"
BAR = "  40%|████      | 2/5 [00:00<00:01,  2.61it/s]"
TRAINER_LOG = "{'loss': '0.613', 'grad_norm': '1.2', 'learning_rate': '6e-07', 'epoch': '0.04688'}"
CRASH = [
    "[rank1]:[rank1]: Traceback (most recent call last):",
    '[rank1]:[rank1]:   File "<frozen runpy>", line 88, in _run_code',
    '[rank1]:[rank1]:   File "/work/main/launcher/rank/entry.py", line 61, in main',
    "[rank1]:[rank1]:     run_recipe(recipe, redact.reveal(recipe_args, os.environ))",
    '[rank1]:[rank1]:   File "jobs/recipe.py", line 14, in <module>',
    '[rank1]:[rank1]:     load_shard(int(os.environ["RANK"]))',
    "[rank1]:[rank1]:     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    '[rank1]:[rank1]:   File "jobs/recipe.py", line 10, in load_shard',
    '[rank1]:[rank1]:     raise ValueError(f"shard {rank} is missing")',
    "[rank1]:[rank1]: ValueError: shard 1 is missing",
]
PEER_LOST = [
    "[rank0]:[rank0]: Traceback (most recent call last):",
    '[rank0]:[rank0]:   File "jobs/recipe.py", line 15, in <module>',
    "[rank0]:[rank0]:     dist.barrier()",
    "[rank0]:[rank0]: RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [::1]:1370.",
]
AGENT_FAILURE = [
    "E1201 19:25:37.083000 6633 torch/distributed/elastic/multiprocessing/api.py:984] failed (exitcode: 1)",
    "Traceback (most recent call last):",
    '  File "/work/.venv/bin/accelerate", line 8, in <module>',
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    "============================================================",
    "Root Cause (first observed failure):",
]


def fed(lines: list[str], tmp_path: Path, **kwargs: object) -> tuple[console.Console, list[str]]:
    shown: list[str] = []
    c = console.Console(tmp_path, shown.append, **kwargs)  # type: ignore[arg-type]
    for line in lines:
        c.feed(line.encode() + b"\n")
    c.close()
    return c, shown


def test_rank0_is_shown_without_prefix_and_other_ranks_stay_in_the_logs(tmp_path: Path) -> None:
    _, shown = fed(
        ["[rank0]:Loading the dataset", "[rank1]:Loading the dataset", "[rank1]:only rank 1"], tmp_path
    )
    assert shown == ["Loading the dataset"]


def test_each_warning_once_with_its_ranks_and_count_and_its_source_line_dropped(tmp_path: Path) -> None:
    lines = [f"[rank{r}]:{text}" for _ in range(3) for r in (0, 1) for text in (GATHER, SOURCE_LINE)]
    c, shown = fed(lines, tmp_path)
    assert len(shown) == 1, shown
    assert "ranks 0-1" in shown[0] and "6x" in shown[0] and "all_gather_into_tensor" in shown[0]
    assert SOURCE_LINE.strip() not in "\n".join(shown)
    summary = c.warnings_summary()
    assert summary is not None and "6 in all" in summary


def test_a_warning_waits_for_the_other_ranks_then_later_repeats_are_only_counted(tmp_path: Path) -> None:
    shown: list[str] = []
    c = console.Console(tmp_path, shown.append)
    c.feed(f"[rank0]:{GATHER}\n".encode())
    c.tick(now=time.time())
    assert shown == []  # still in its window
    c.feed(f"[rank3]:{GATHER}\n".encode())
    c.tick(now=time.time() + console.WARNING_WINDOW + 0.1)
    assert len(shown) == 1 and "ranks 0,3" in shown[0]
    c.feed(f"[rank1]:{GATHER}\n".encode())
    c.tick(now=time.time() + 10)
    assert len(shown) == 1
    assert c.warnings[GATHER.split(": ", 1)[1]].count == 3


def test_progress_bars_and_trainer_dicts_are_replaced_by_the_progress_line(tmp_path: Path) -> None:
    # A bar refreshed without a newline, then rank 1's warning on the same line (as seen).
    glued = f"[rank0]:{BAR}[rank1]:{GATHER}"
    c, shown = fed([f"[rank0]:{BAR}", glued, f"[rank1]:{SOURCE_LINE}", f"[rank0]:{TRAINER_LOG}"], tmp_path)
    assert len(shown) == 1 and "rank 1" in shown[0], shown
    assert c.progress.detail == BAR.strip()


def test_torchruns_banner_and_harmless_mismatch_are_hidden(tmp_path: Path) -> None:
    glog = "W1201 19:21:28.474000 3462 torch/distributed/run.py:874] "
    lines = [
        glog + "*****************************************",
        glog + "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default",
        "[rank0]:Gradient accumulation steps mismatch: GradientAccumulationPlugin has 1, "
        "DeepSpeed config has 4. Using DeepSpeed's value.",
    ]
    _, shown = fed(lines, tmp_path)
    assert len(shown) == 1 and shown[0].startswith("warning (torchrun): Setting OMP_NUM_THREADS"), shown


def test_our_own_lines_are_shown_once_from_any_rank(tmp_path: Path) -> None:
    line = "ftlaunch: building DeepSpeed's cpu_adam op for this machine"
    _, shown = fed([f"[rank1]:{line}", f"[rank0]:{line}", "[rank0]:ftlaunch: effective micro 2"], tmp_path)
    assert shown == [line, "ftlaunch: effective micro 2"]


def test_tracebacks_are_held_and_the_cause_is_reported_not_the_lost_peer(tmp_path: Path) -> None:
    c, shown = fed([*PEER_LOST, *CRASH, *AGENT_FAILURE], tmp_path)
    assert not [s for s in shown if "Traceback" in s or "File " in s or "Root Cause" in s], shown
    report = c.failure_report(tmp_path / "node0.log")
    assert report[0] == "  rank 1 failed first: ValueError: shard 1 is missing"
    frames = "\n".join(report[1:-1])
    assert "load_shard" in frames and 'raise ValueError(f"shard {rank} is missing")' in frames
    assert "runpy" not in frames and "launcher/rank/entry.py" not in frames and "^^^" not in frames
    assert report[-1].endswith("node0.log")


def test_a_failure_before_any_rank_ran_reports_torchrun(tmp_path: Path) -> None:
    c, _ = fed(AGENT_FAILURE, tmp_path)
    assert c.failure_report(tmp_path / "node0.log")[0].startswith("  torchrun failed first: ")


def test_everything_mode_prints_every_line_raw(tmp_path: Path) -> None:
    lines = [f"[rank1]:{GATHER}", f"[rank1]:{SOURCE_LINE}", *CRASH]
    _, shown = fed(lines, tmp_path, everything=True)
    assert shown == lines


def test_muted_after_a_stop(tmp_path: Path) -> None:
    _, shown = fed(["[rank0]:before", *CRASH], tmp_path, muted=lambda: True)
    assert shown == []


def test_progress_line_from_rank0s_records(tmp_path: Path) -> None:
    """Step, loss, learning rate, samples/s from the step times, tokens/s from num_tokens, ETA."""
    started = time.time() - 20
    rundir.write_json(
        tmp_path / rundir.PROGRESS,
        {"phase": "training", "step": 10, "max_steps": 30, "first_step": 0, "started": started,
         "time": started + 10, "samples_per_step": 8},
    )  # fmt: skip
    with open(tmp_path / rundir.METRICS, "w") as f:
        for step, tokens in ((5, 1000), (10, 3000)):
            record = {"step": step, "loss": 2.5 / step, "learning_rate": 1e-5, "num_tokens": tokens}
            f.write(json.dumps({**record, "time": started + step}) + "\n")
    shown: list[str] = []
    c = console.Console(tmp_path, shown.append)
    c.tick(final=True)
    (line,) = shown
    parts = line.split(" · ")
    assert parts[:3] == ["step 10/30", "loss 0.25", "lr 1e-05"]
    assert "8 samples/s" in parts  # 10 steps x 8 samples in the 10 s they took
    assert "400 tokens/s" in parts  # 2000 tokens between the logs 5 s apart
    assert "ETA 0:20" in parts  # 20 steps left at 1 s a step


def test_progress_line_shows_the_trainers_key_metric(tmp_path: Path) -> None:
    """GRPO logs a reward, which is what its users watch; a GRPO log without a loss still shows."""
    started = time.time() - 5
    rundir.write_json(
        tmp_path / rundir.PROGRESS,
        {"phase": "training", "step": 3, "max_steps": 5, "first_step": 0, "started": started,
         "time": started + 3},
    )  # fmt: skip
    logs = [
        {"step": 2, "loss": 0.01, "reward": 0.25, "kl": 0.1, "learning_rate": 1e-6},
        {"step": 3, "reward": 0.5, "rewards/correctness/mean": 0.5, "learning_rate": 5e-7},
    ]
    for record in logs:
        shown: list[str] = []
        rundir.append_json_line(tmp_path / rundir.METRICS, {**record, "time": started + record["step"]})
        console.Console(tmp_path, shown.append).tick(final=True)
        parts = shown[0].split(" · ")
        expected = (
            ["loss 0.01", "reward 0.25", "lr 1e-06"] if "loss" in record else ["reward 0.5", "lr 5e-07"]
        )
        assert parts[1 : 1 + len(expected)] == expected


def test_without_a_terminal_progress_is_printed_at_most_every_few_seconds(tmp_path: Path) -> None:
    shown: list[str] = []
    c = console.Console(tmp_path, shown.append)
    now = time.time()
    rundir.write_json(tmp_path / rundir.PROGRESS, {"phase": "training", "step": 1, "first_step": 0,
                                                   "started": now, "time": now})  # fmt: skip
    for i in range(5):
        rundir.append_json_line(tmp_path / rundir.METRICS, {"step": i, "loss": 1.0, "time": now})
        c.tick(now=now + i)
    assert len(shown) == 1
    c.tick(now=now + 5, final=True)
    assert len(shown) == 2


def test_a_silent_phase_is_announced_without_a_terminal(tmp_path: Path) -> None:
    shown: list[str] = []
    c = console.Console(tmp_path, shown.append)
    rundir.write_json(
        tmp_path / rundir.PROGRESS, {"phase": "loading the model and data", "time": time.time()}
    )
    c.tick(now=time.time() + console.QUIET_NOTICE_EVERY + 1)
    assert len(shown) == 1 and shown[0].startswith("loading the model and data (0:3")


def test_format_ranks() -> None:
    assert lines.format_ranks([5, 0, 1, 2, 3, 7, 8]) == "0-3,5,7-8"
    assert lines.format_ranks([4]) == "4"


class HungUpTerminal(io.StringIO):
    """A terminal whose other end went away (an ssh session dropped): every write fails with EIO."""

    def __init__(self) -> None:
        super().__init__()
        self.hung_up = False

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.hung_up:
            raise OSError(errno.EIO, "Input/output error")
        return super().write(text)


def test_a_terminal_that_hangs_up_is_dropped_and_stopping_still_returns() -> None:
    """rich's live line on a terminal that hung up: showing, updating and stopping must not raise,
    or the supervisor would die before recording its verdict (the run then reads "lost")."""
    terminal = HungUpTerminal()
    screen = Screen(terminal, live=True)
    screen.show("first line")
    screen.status("step 1/10")
    assert screen.live and "first line" in terminal.getvalue()
    terminal.hung_up = True
    screen.status("step 2/10")
    screen.show("a line nobody will see")
    screen.stop()
    assert not screen.live and screen.stream is None


def test_stopping_on_a_hung_up_terminal_returns() -> None:
    terminal = HungUpTerminal()
    screen = Screen(terminal, live=True)
    terminal.hung_up = True
    screen.stop()
    assert not screen.live
