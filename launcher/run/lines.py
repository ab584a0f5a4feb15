"""Reading the ranks' output line by line: rank prefixes, warnings, progress bars, tracebacks,
and the formats the console prints. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from launcher.protocol import RANK_FRAMES

# torchrun's prefix, then torch's own one that it puts on an exception a rank prints
RANK_PREFIX = re.compile(r"^\[rank(\d+)\]:(?:\[rank\d+\]: ?)?")


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


PY_WARNING = re.compile(r"^\S.*?:\d+: (?P<message>[A-Z]\w*Warning: .*)$")


GLOG = re.compile(r"^(?P<level>[IWEF])\d{4} [\d:.]+ +\d+ \S+\] ?(?P<message>.*)$")


LOG_WARNING = re.compile(
    r"^\[?WARN(ING)?\]?[ :]|\[WARNING\]| - WARNING - |\bdeprecated\b|^Failed to load ", re.IGNORECASE
)


# tqdm and datasets' bars: "  40%|####      | 2/5 [00:01<00:01, 2.6it/s]", "Map: 64 examples [00:00, ...]"
PROGRESS_BAR = re.compile(
    r"^(?P<bar>.*?(?:\d+%\|[^|]*\| *)?\d+(?:/\d+)?(?: \w+)? \[[0-9?][^\]]*\])(?P<rest>.*)$"
)


TRAINER_LOG = re.compile(r"^\{'(loss|train_runtime|train_loss)'")


TRACEBACK = "Traceback (most recent call last):"


CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


# Upstream messages that are harmless under ftlaunch, hidden from the console (kept in the logs).
HARMLESS = (
    # transformers hands accumulation to DeepSpeed and sets accelerate's own to 1 on purpose; the
    # DeepSpeed value is the one ftlaunch decided and rendered.
    re.compile(r"Gradient accumulation steps mismatch: GradientAccumulationPlugin has 1"),
    re.compile(r"^\**$"),  # torchrun's banner lines of stars
    re.compile(r"^Sending process \d+ closing signal"),  # torchrun ending the other ranks of a failure
)


# What a rank raises because another one died first: never reported as the cause.
CONSEQUENCES = re.compile(
    r"Connection closed by peer|Connection reset by peer|remote worker crashing|Broken pipe|"
    r"communicator was aborted|ChildFailedError|SignalException|timed out|Timeout"
)


@dataclass(frozen=True)
class Line:
    """One line of a node's output: the rank that wrote it (None: the launcher/agent) and its text."""

    rank: int | None
    text: str


def parse_line(raw: bytes) -> Line:
    text = ANSI.sub("", raw.decode("utf-8", "replace").rstrip("\r\n"))
    match = RANK_PREFIX.match(text)
    if match:
        return Line(int(match.group(1)), text[match.end() :])
    return Line(None, text)


def warning_text(text: str) -> str | None:
    """The message of a warning line (Python's, torch's glog ``W``, logging's), else None."""
    match = PY_WARNING.match(text)
    if match:
        return match.group("message")
    match = GLOG.match(text)
    if match:
        return match.group("message").strip() if match.group("level") == "W" else None
    return text.strip() if LOG_WARNING.search(text) else None


def strip_progress_bar(text: str) -> tuple[str | None, str]:
    """Split a progress bar's refresh from whatever was printed right after it on the same line."""
    match = PROGRESS_BAR.match(text)
    if match is None:
        return None, text
    return match.group("bar").strip(), match.group("rest")


def format_ranks(ranks: Iterable[int]) -> str:
    """0,1,2,3,5 -> '0-3,5'."""
    ordered = sorted(set(ranks))
    spans: list[str] = []
    start = prev = None
    for r in [*ordered, None]:
        if r is not None and prev is not None and r == prev + 1:
            prev = r
            continue
        if start is not None:
            spans.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = r
    return ",".join(spans)


def compact(number: float) -> str:
    """3 significant digits, thousands as k: 7590 -> '7.59k'."""
    return f"{number / 1000:.3g}k" if number >= 1000 else f"{number:.3g}"


def meaningful_frames(frames: list[str]) -> list[str]:
    """A traceback's frames without the launcher's own (runpy, the entry) and the ``^^^`` marks."""
    kept: list[str] = []
    skipping = False
    for text in frames:
        stripped = text.strip()
        if stripped.startswith("File "):
            skipping = "<frozen " in stripped or any(f in stripped for f in RANK_FRAMES)
        if skipping or not stripped or set(stripped) <= set("^~ "):
            continue
        kept.append(text)
    return kept


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
