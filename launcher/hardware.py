"""What GPUs this machine can see, asked of ``nvidia-smi`` so the CLI never imports torch."""

from __future__ import annotations

import os
import shutil
import subprocess

from launcher.rules import Hardware


def probe() -> Hardware:
    """Visible GPUs with their compute capability; an empty ``Hardware`` when there are none."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return Hardware()
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Hardware()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return Hardware()
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    visible = _visible_indices()
    rows = [r for r in rows if visible is None or r[0] in visible]
    return Hardware(tuple(r[1] for r in rows), tuple(float(r[2]) for r in rows))


def _visible_indices() -> set[str] | None:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return None if value is None else {v.strip() for v in value.split(",")}
