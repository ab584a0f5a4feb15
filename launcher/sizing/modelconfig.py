"""The edge of ``--zero auto`` and ``ftlaunch estimate``: find and read the model's ``config.json``
and learn the memory of the GPUs (or the RAM). The arithmetic and the choice are pure
(``sizing/estimate.py``, ``sizing/zeroauto.py``); everything that reads a file or asks
``nvidia-smi`` is here.

A model is named by a local folder, a ``config.json`` file, or a hub id that has a copy in the
local Hugging Face cache (nothing is downloaded: a launch must not wait on the network, and the
dry run must decide exactly what the launch will).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from launcher.spec.launchspec import clip

MAX_CONFIG_BYTES = 4 * 2**20


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


# ---------------------------------------------------------------- the model


def hub_cache() -> Path:
    """huggingface_hub's cache folder, by its own variables (it is not imported for this)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "huggingface" / "hub"


def find_config(name: str) -> tuple[Path | None, str]:
    """``config.json`` of a folder, a file, or a hub id's cached snapshot (the ``main`` ref's, or
    else the newest); or why there is none."""
    path = Path(name).expanduser()
    if path.is_dir():
        found = path / "config.json"
        return (found, "") if found.is_file() else (None, "a folder without config.json")
    if path.is_file():
        return path, ""
    if not HUB_ID.fullmatch(name) or name.startswith("."):
        return None, "no such file or folder"
    repo = hub_cache() / f"models--{name.replace('/', '--')}"
    ref = repo / "refs" / "main"
    snapshots = [repo / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    if (repo / "snapshots").is_dir():
        snapshots += sorted((repo / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for snapshot in snapshots:
        if (snapshot / "config.json").is_file():
            return snapshot / "config.json", ""
    return None, f"not a local folder or file, and no copy in the Hugging Face cache ({hub_cache()})"


def read_config(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return None, f"{path} is over {MAX_CONFIG_BYTES // 2**20} MiB: not a model's config.json"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, f"{path}: cannot be read as JSON ({clip(str(err))})"
    if not isinstance(data, dict):
        return None, f"{path}: not a JSON object"
    return data, ""


def load_model_config(name: str, where: str) -> tuple[dict[str, Any] | None, Path | None, str]:
    """The config and its path, or a problem naming ``where`` (the flag) and the fix."""
    path, why = find_config(name)
    if path is None:
        return (
            None,
            None,
            (f"{where} {clip(name)}: {why}; give --model with a local model folder or its config.json"),
        )
    config, why = read_config(path)
    if config is None:
        return (
            None,
            path,
            f"{where} {clip(name)}: {why}; give --model with a local model folder or its config.json",
        )
    return config, path, ""
