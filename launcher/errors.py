"""The one error type users see for bad input: every problem at once, each naming its flag or key."""

from __future__ import annotations

from collections.abc import Iterable


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
