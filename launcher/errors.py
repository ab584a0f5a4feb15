"""The one error type users see for bad input: every problem at once, each naming its flag or key."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import NoReturn


class SpecError(ValueError):
    """Raised with all the problems of a launch request, so the user can fix them in one go."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            return f"ftlaunch: {self.problems[0]}"
        lines = [f"ftlaunch: {len(self.problems)} problems:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors in ftlaunch's form (one line, exit 2) and no prefix matching:
    ``--proc`` is an unknown flag, not a silent ``--procs``."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(allow_abbrev=False, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise SpecError([f"{message}{self.suggestion(message)} (see {self.prog} --help)"])

    def suggestion(self, message: str) -> str:
        """For an unknown flag, the nearest real one: ``--proc`` -> did you mean --procs?"""
        import difflib

        if not message.startswith("unrecognized arguments: "):
            return ""
        known = [o for a in self._actions for o in a.option_strings]
        for word in message.split(": ", 1)[1].split():
            close = difflib.get_close_matches(word.split("=")[0], known, n=1)
            if close:
                return f"; did you mean {close[0]}?"
        return ""
