"""DeepSpeed's universal checkpoint: the conversion that lets a run resume on another world size.
Made once, inside the checkpoint's folder, staged under a temporary name and renamed when whole, so
a crash mid-conversion never leaves a half-written universal checkpoint that looks complete."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from launcher.records import rundir
from launcher.records.checkpoints import Checkpoint, CheckpointError, _tag

_STAGING_PREFIX = ".ftlaunch-universal-"


# --- universal conversion -----------------------------------------------------------------------


def to_universal(checkpoint: Checkpoint) -> Path:
    """DeepSpeed's universal form of ``checkpoint``, made once, inside the checkpoint folder.

    A ZeRO checkpoint loads only on the world size it was saved on; the universal form loads on any.
    The converter writes ``latest_universal`` into the parent of its output folder and DeepSpeed
    reads it from the checkpoint folder, so the result must live there. It is converted under a
    staging folder and renamed into place, and ``latest_universal`` is written last, so a crash never
    leaves a half-converted folder that looks done; a finished conversion is reused."""
    folder = checkpoint.path
    if not checkpoint.complete:
        raise CheckpointError([f"{folder}: not converting an incomplete checkpoint ({checkpoint.problem})"])
    tag = _tag(folder)
    if not tag:
        raise CheckpointError(
            [f"{folder}: not a DeepSpeed checkpoint (no 'latest' file); plain DDP resumes on any world size"]
        )
    name = f"{tag}_universal"
    final = folder / name
    if _universal_done(folder, name):
        return final
    _remove_leftovers(folder, final)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=_STAGING_PREFIX))
    try:
        _convert(folder, folder / tag, staging / name)
        os.replace(staging / name, final)
        rundir.write_atomic(folder / "latest_universal", name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _universal_done(folder: Path, name: str) -> bool:
    """An earlier conversion finished: ``latest_universal`` (written last) names an existing folder."""
    try:
        named = (folder / "latest_universal").read_text().strip()
    except OSError:
        return False
    return named == name and (folder / name).is_dir()


def _remove_leftovers(folder: Path, final: Path) -> None:
    """Staging folders of a crashed attempt, and a universal folder ``latest_universal`` does not
    vouch for (renamed into place just before a crash, or a hand-run conversion): redo it."""
    for stale in folder.glob(f"{_STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)


def _convert(folder: Path, source: Path, target: Path) -> None:
    """Run DeepSpeed's converter (it has no console entry point) in one CPU child process.

    ``--inject_missing_state`` adds the state pure data parallelism lacks: without it, ZeRO-1/2
    checkpoints written through HF/accelerate fail (resume-facts)."""
    argv = [
        sys.executable,
        "-m",
        "deepspeed.checkpoint.ds_to_universal",
        "--input_folder",
        str(source),
        "--output_folder",
        str(target),
        "--inject_missing_state",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (target.parent / "latest_universal").is_file():
        why = f"exit {done.returncode}" if done.returncode else "it wrote no latest_universal"
        tail = _tail(done.stderr or done.stdout)
        raise CheckpointError([f"{folder}: converting to a universal checkpoint failed ({why}):\n{tail}"])


def _tail(text: str, lines: int = 15) -> str:
    """The end of the converter's output, where the exception is."""
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"
