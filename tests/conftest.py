"""Shared fixtures: every test runs in its own folder, never the user's home or the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a spaces-and-quotes name, so path quoting bugs show up."""
    work = tmp_path / "work dir 'quoted'"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "recipe.py").write_text("print('hello')\n")
    return work


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ACCELERATE_CONFIG_FILE", os.devnull)
