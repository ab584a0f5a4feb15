"""What a user sees while a run goes: rank 0's words, each warning once, one progress line.

The node supervisor copies every line of every rank to ``logs/`` untouched and hands each one to a
``Console``, which decides what reaches the terminal:

- rank 0's own output, with its ``[rank0]:`` prefix dropped; other ranks' output stays in the logs;
- each distinct warning once, with the ranks that raised it and how often (collected for a moment
  first, since every rank raises the same warning at nearly the same time); Python's second line of
  a warning (the source line) and messages known to be harmless are dropped;
- progress bars and the trainer's log dictionaries are replaced by one progress line (step / total,
  loss, learning rate, samples and tokens per second, elapsed, ETA), read from the attempt's
  ``progress.json`` and ``metrics.jsonl``: live on a terminal (rich), a line per logged step
  otherwise;
- tracebacks are held back: when the run fails, ``failure_report`` gives the failing rank's last
  meaningful lines, printed after ftlaunch's own verdict, never torchrun's ``ChildFailedError``.

``FTLAUNCH_CONSOLE=all`` (``ftlaunch --all-ranks``) prints every line of every rank as it comes.
Deciding is pure (``classify``); the terminal is touched only in ``Screen``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from launcher.protocol import MODE_ENV
from launcher.records import metrics, rundir
from launcher.run.lines import (
    CHAINED,
    CONSEQUENCES,
    HARMLESS,
    PY_WARNING,
    RANK_PREFIX,
    TRACEBACK,
    TRAINER_LOG,
    Line,
    format_ranks,
    meaningful_frames,
    parse_line,
    strip_progress_bar,
    warning_text,
)
from launcher.run.progress import Progress

WARNING_WINDOW = 1.5  # seconds a new warning waits for the other ranks to raise it too


PLAIN_PROGRESS_EVERY = 10.0  # without a terminal: at most one progress line per this many seconds


QUIET_NOTICE_EVERY = 30.0  # without a terminal: say what is going on after this long without output


REPORT_LINES = 6  # lines of the failing rank's traceback shown under the verdict


@dataclass
class Warned:
    text: str
    first_seen: float
    ranks: set[int] = field(default_factory=set)
    count: int = 0
    shown: bool = False


@dataclass
class RankState:
    """What a rank is in the middle of: a warning's source line, or a traceback."""

    after_warning: bool = False
    traceback: list[str] | None = None


@dataclass
class Failure:
    rank: int | None
    lines: list[str]
    when: float


class Console:
    """Decides, line by line, what of a node's output the user sees (see the module's docstring).

    ``feed`` is called by the thread copying the output, ``tick`` by a timer; both take a lock.
    ``show`` prints one line; ``status`` sets the progress line (None: there is no live line)."""

    def __init__(
        self,
        attempt_dir: Path,
        show: Callable[[str], None],
        status: Callable[[str], None] | None = None,
        everything: bool = False,
        muted: Callable[[], bool] = lambda: False,
    ) -> None:
        self.attempt_dir = attempt_dir
        self.show = show
        self.status = status
        self.everything = everything
        self.warnings: dict[str, Warned] = {}
        self.ranks: dict[int | None, RankState] = {}
        self.failures: list[Failure] = []
        self.progress = Progress()
        self.muted = muted  # after a stop, the processes' dying words go to the logs only
        self._lock = threading.Lock()
        self._metrics_offset = 0
        self._last_plain_progress = 0.0
        self._unreported_logs = 0
        self._last_output = time.time()

    # ------------------------------------------------------------ lines

    def feed(self, raw: bytes) -> None:
        with self._lock:
            if self.everything:
                self._print(raw.decode("utf-8", "replace").rstrip("\r\n"))
                return
            self._take(parse_line(raw), time.time())

    def _take(self, line: Line, now: float) -> None:
        state = self.ranks.setdefault(line.rank, RankState())
        text = line.text
        if state.traceback is not None:
            self._continue_traceback(line.rank, state, text, now)
            return
        if text.startswith(TRACEBACK):
            state.traceback = [text]
            return
        bar, text = strip_progress_bar(text)
        if bar is not None:
            if line.rank in (0, None):
                self.progress.detail = bar
            if RANK_PREFIX.match(text):  # a bar left without its newline, then another rank's line
                self._take(parse_line(text.encode()), now)
                return
            if not text.strip():
                return
            state.after_warning = False
        if state.after_warning and text[:1].isspace():
            return  # Python prints the warning's source line under it
        state.after_warning = False
        self._take_text(line.rank, state, text, now)

    def _take_text(self, rank: int | None, state: RankState, text: str, now: float) -> None:
        if not text.strip() or any(p.search(text.strip()) for p in HARMLESS):
            return
        if text.startswith("ftlaunch:"):  # our own words, from whichever rank says them
            self._note(text, rank, now, as_warning=False)
            return
        warned = warning_text(text)
        if warned is not None:
            state.after_warning = PY_WARNING.match(text) is not None
            if warned and not any(p.search(warned) for p in HARMLESS):
                self._note(warned, rank, now, as_warning=True)
            return
        if rank != 0 or TRAINER_LOG.match(text):
            return  # other ranks and the launcher: logs only; the trainer's logs: the progress line
        self._print(text)

    def _continue_traceback(self, rank: int | None, state: RankState, text: str, now: float) -> None:
        assert state.traceback is not None
        state.traceback.append(text)
        if not text or text[:1].isspace() or text.startswith(CHAINED) or text.startswith(TRACEBACK):
            return
        self.failures.append(Failure(rank, state.traceback, now))  # the exception's own line ends it
        state.traceback = None

    def _note(self, text: str, rank: int | None, now: float, as_warning: bool) -> None:
        """Count a warning (or one of our own lines); it is shown once, after its window."""
        key = text if as_warning else f"\0{text}"
        warned = self.warnings.setdefault(key, Warned(text, now))
        warned.count += 1
        if rank is not None:
            warned.ranks.add(rank)
        if not as_warning and not warned.shown:
            warned.shown = True
            self._print(text)

    # ------------------------------------------------------------ time

    def tick(self, now: float | None = None, final: bool = False) -> None:
        """Show warnings whose window has passed; refresh the progress from the attempt's files."""
        now = time.time() if now is None else now
        with self._lock:
            for key, warned in self.warnings.items():
                if not warned.shown and (final or now - warned.first_seen >= WARNING_WINDOW):
                    warned.shown = True
                    if not key.startswith("\0"):
                        self._print(self.warning_line(warned))
            if self.everything:
                return
            new_logs = self._read_progress()
            self._report_progress(now, new_logs, final)

    def warning_line(self, warned: Warned) -> str:
        who = (
            f"rank {format_ranks(warned.ranks)}"
            if len(warned.ranks) == 1
            else f"ranks {format_ranks(warned.ranks)}"
        )
        times = f", {warned.count}x" if warned.count > 1 else ""
        origin = f"{who}{times}" if warned.ranks else f"torchrun{times}"
        return f"warning ({origin}): {warned.text}"

    def _read_progress(self) -> int:
        """Take rank 0's progress record and any new metrics lines; return how many logs were new."""
        record = rundir.read_json_quiet(self.attempt_dir / rundir.PROGRESS)
        p = self.progress
        if record:
            phase = str(record.get("phase", p.phase))
            if phase != p.phase:
                p.phase, p.phase_since, p.detail = phase, float(record.get("time", time.time())), ""
            if isinstance(record.get("step"), int):
                p.step, p.step_time = record["step"], float(record.get("time", time.time()))
                p.max_steps = record.get("max_steps") or None
                p.samples_per_step = record.get("samples_per_step") or None
                if p.first is None and isinstance(record.get("first_step"), int):
                    p.first = (record["first_step"], float(record.get("started", time.time())))
        new = 0
        for logged in self._new_metrics():
            new += 1
            if metrics.is_step_log(logged):
                p.metrics = logged
            if isinstance(logged.get("num_tokens"), (int, float)):
                p.tokens.append((float(logged.get("time", 0.0)), float(logged["num_tokens"])))
            if "train_runtime" in logged:
                p.metrics = {**p.metrics, **logged}
        return new

    def _new_metrics(self) -> list[dict[str, Any]]:
        path = self.attempt_dir / rundir.METRICS
        try:
            with open(path, "rb") as f:
                f.seek(self._metrics_offset)
                data = f.read()
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self._metrics_offset += len(complete)
        out = []
        for raw in complete.splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def _report_progress(self, now: float, new_logs: int, final: bool) -> None:
        line = self.progress.describe(now)
        if self.status is not None:
            self.status(line)
            return
        self._unreported_logs += new_logs
        due = now - self._last_plain_progress >= PLAIN_PROGRESS_EVERY
        quiet = now - self._last_output >= QUIET_NOTICE_EVERY
        if (self._unreported_logs and (due or final)) or quiet:
            self._last_plain_progress = now
            self._unreported_logs = 0
            self._print(line)

    # ------------------------------------------------------------ the end

    def close(self) -> None:
        """Show what is still pending: warnings in their window, the last progress (the live line
        goes away with the live display, so it is printed once more as a line of its own)."""
        self.tick(final=True)
        if self.status is not None and self.progress.first is not None:
            with self._lock:
                self._print(self.progress.describe(time.time()))

    def failure_report(self, log_file: Path) -> list[str]:
        """Under a failed verdict: the rank that failed first (not one that merely lost its peer),
        its exception and the frames that led there, and where to read everything."""
        lines: list[str] = []
        causes = [f for f in self.failures if f.rank is not None and not CONSEQUENCES.search(f.lines[-1])]
        ranked = causes or [f for f in self.failures if f.rank is not None] or self.failures
        if ranked:
            first = ranked[0]
            who = f"rank {first.rank}" if first.rank is not None else "torchrun"
            lines.append(f"  {who} failed first: {first.lines[-1].strip()}")
            lines += [f"    {t.rstrip()}" for t in meaningful_frames(first.lines[1:-1])[-REPORT_LINES:]]
        lines.append(f"  every rank's full output: {log_file}")
        return lines

    def warnings_summary(self) -> str | None:
        warned = [w for k, w in self.warnings.items() if not k.startswith("\0")]
        if not warned:
            return None
        total = sum(w.count for w in warned)
        return f"{len(warned)} distinct warning(s) shown once each ({total} in all); every one is in logs/"

    # ------------------------------------------------------------ output

    def _print(self, text: str) -> None:
        if self.muted():
            return
        self._last_output = time.time()
        self.show(text)


class Screen:
    """The terminal end of a ``Console``: rich's live line on a terminal, plain lines otherwise. A
    console that went away (closed pipe, full disk) is dropped silently: the logs have it all."""

    def __init__(self, stream: IO[str], live: bool) -> None:
        self.stream: IO[str] | None = stream
        self._live: Any = None
        if live:
            from rich.console import Console as RichConsole
            from rich.live import Live
            from rich.text import Text

            self._text = Text
            rich_console = RichConsole(file=stream, highlight=False, markup=False, emoji=False)
            self._live = Live(Text(""), console=rich_console, refresh_per_second=4, transient=True)
            self._live.start()

    @property
    def live(self) -> bool:
        return self._live is not None

    def show(self, text: str) -> None:
        try:
            if self._live is not None:
                self._live.console.print(self._text(text), soft_wrap=True)
            elif self.stream is not None:
                self.stream.write(text + "\n")
                self.stream.flush()
        except (OSError, ValueError):  # a closed pipe, a full disk, a terminal that hung up (EIO)
            self._gone()

    def status(self, text: str) -> None:
        if self._live is not None:
            try:
                self._live.update(self._text(text, style="bold", no_wrap=True, overflow="ellipsis"))
            except (OSError, ValueError):
                self._gone()

    def stop(self) -> None:
        """Clear the live line. On a terminal that hung up (an ssh session dropped) this write fails;
        the supervisor must still go on to end the tree and record the verdict."""
        live, self._live = self._live, None
        if live is not None:
            try:
                live.stop()
            except (OSError, ValueError):
                self.stream = None

    def _gone(self) -> None:
        live, self._live, self.stream = self._live, None, None
        if live is not None:
            with contextlib.suppress(OSError, ValueError):
                live.stop()  # stops rich's refresh thread first, then its last write fails


def wants_everything(env: dict[str, str] | os._Environ[str]) -> bool:
    return env.get(MODE_ENV, "") == "all"
