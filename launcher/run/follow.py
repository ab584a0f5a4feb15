"""Following a run's logs as they grow, until its attempt ends: ``ftlaunch logs -f`` and the
console of ``--slurm --wait``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from launcher.records import rundir
from launcher.run import console


class LogFollower:
    """Prints what was appended to node 0's log of the newest attempt since the last call."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offsets: dict[Path, int] = {}
        self.consoles: dict[Path, console.Console] = {}

    def print_new(self) -> None:
        """The first node's new lines, through the same console filter as a local launch."""
        latest = rundir.latest_attempt(self.run_dir)
        if latest is None:
            return
        path = latest / rundir.LOGS / "node0.log"
        if not path.exists():
            return
        shown = self.consoles.get(latest)
        if shown is None:
            for earlier in self.consoles.values():  # a requeue: the previous attempt is over
                earlier.close()
            shown = self.consoles[latest] = console.Console(
                latest, print, everything=console.wants_everything(os.environ)
            )
        with open(path, "rb") as f:
            f.seek(self.offsets.get(path, 0))
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offsets[path] = self.offsets.get(path, 0) + len(complete)
        for line in complete.splitlines(keepends=True):
            shown.feed(line)
        shown.tick()

    def close(self) -> None:
        for shown in self.consoles.values():
            shown.close()


def read_lines(path: Path) -> Iterator[str]:
    if path.exists():
        with open(path, errors="replace") as f:
            yield from f


def follow_lines(path: Path, attempt_dir: Path) -> Iterator[str]:
    """Like ``tail -f``, ending once the attempt has its verdict and nothing more was written."""
    offset = 0
    while True:
        ended = attempt_ended(attempt_dir)
        if path.exists():
            with open(path, errors="replace") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            yield from chunk.splitlines(keepends=True)
        if ended:
            return
        time.sleep(1)


def attempt_ended(attempt_dir: Path) -> bool:
    path = attempt_dir / rundir.STATUS
    try:
        return str(rundir.read_json(path).get("state")) in rundir.ENDED if path.exists() else False
    except ValueError:
        return False
