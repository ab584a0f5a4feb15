"""The committed presets are exactly what the code renders (golden files)."""

from __future__ import annotations

import difflib

from launcher.cli.configs import preset_texts
from launcher.spec.presets import ACCELERATE_DIR, DEEPSPEED_DIR

from .conftest import REPO

REFRESH = "run `ftlaunch configs --presets --write` from the repository root and commit the result"


def test_presets_match_the_renderer() -> None:
    expected = preset_texts()
    problems = []
    for path, text in expected.items():
        file = REPO / path
        if not file.exists():
            problems.append(f"{path} is missing")
        elif file.read_text() != text:
            diff = difflib.unified_diff(
                file.read_text().splitlines(), text.splitlines(), path, "rendered", lineterm=""
            )
            problems.append("\n".join(diff))
    committed = {
        p.relative_to(REPO).as_posix() for d in (ACCELERATE_DIR, DEEPSPEED_DIR) for p in (REPO / d).iterdir()
    }
    problems += [
        f"{extra} is committed but no preset renders it" for extra in sorted(committed - set(expected))
    ]
    assert not problems, "\n".join(problems) + f"\n{REFRESH}"


def test_presets_cover_the_documented_set() -> None:
    names = {p.rsplit("/", 1)[1].split(".")[0] for p in preset_texts()}
    assert {"ddp", "zero1", "zero2", "zero2_offload", "zero3", "zero3_offload"} <= names
