"""Which checkpoints can be resumed from, what topology they were saved under, and their upkeep.

The trainer writes ``checkpoint-N/`` in place and ``get_last_checkpoint`` returns the newest folder
whether or not it was finished (resume-facts), so a node that dies mid-save leaves a newest folder
that would be resumed from. Completeness is therefore ours: after every rank finished saving, rank 0
writes :data:`MARKER` last (``rank/saving.py``), recording the files present and their sizes. A
checkpoint is used only when that marker exists, everything it lists is unchanged and the pieces a
resume loads are there.

Only ``scan``/``latest_complete``/``prune`` run on every save or resume decision, so they read file
names, sizes and two small JSON files; torch (``topology``'s fallback) and DeepSpeed (the universal
conversion, in a child process) are loaded only where needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import SpecError
from launcher.records import rundir

MARKER = "ftlaunch_complete.json"


TOPOLOGY_KEYS = ("world_size", "zero_stage", "micro", "grad_accum", "global_batch")


_FOLDER = re.compile(r"checkpoint-(\d+)")


# DeepSpeed names shards ``[bf16_]zero_pp_rank_R_mp_rank_MM_optim_states.pt`` (the ``bf16_`` prefix
# whenever bf16 is on) and, under ZeRO-3, ``zero_pp_rank_R_mp_rank_MM_model_states.pt`` per rank.
_OPTIM_SHARD = re.compile(r"(?:.*_)?zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt")


_MODEL_SHARD = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_model_states\.pt")


_MODEL_STATES = "mp_rank_00_model_states.pt"


_ZERO3_MODEL_STATES = "zero_pp_rank_0_mp_rank_00_model_states.pt"


class CheckpointError(SpecError):
    """A checkpoint cannot be used as asked. A ``SpecError`` so the CLI reports it in one line,
    naming the checkpoint, instead of a traceback."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int  # N of checkpoint-N
    complete: bool
    problem: str | None  # why it is not complete, naming the missing or corrupt piece
    marker: dict[str, Any]  # the marker's content ({} if none)


# --- marking ------------------------------------------------------------------------------------


def mark_complete(checkpoint_dir: Path, info: Mapping[str, Any]) -> None:
    """Write the completion marker: ``info`` plus every file present and its size.

    Called by rank 0 once all ranks have saved. The sizes let ``scan`` notice a checkpoint that was
    truncated or partly overwritten later; the atomic write means a crash leaves no marker rather
    than a half one."""
    content = {**info, "files": _file_sizes(checkpoint_dir)}
    rundir.write_atomic(checkpoint_dir / MARKER, json.dumps(content, indent=2, sort_keys=True) + "\n")
    _fsync_dir(checkpoint_dir)


def _file_sizes(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (relative POSIX path -> bytes), the marker and its temp files aside."""
    sizes = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name == MARKER or name.startswith(f".{MARKER}."):
                continue
            path = Path(root, name)
            sizes[path.relative_to(folder).as_posix()] = path.stat().st_size
    return dict(sorted(sizes.items()))


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: the marker is the commit point, it must survive a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network mounts) refuse fsync on folders; the rename still happened
    finally:
        os.close(fd)


# --- scanning -----------------------------------------------------------------------------------


def scan(output_dir: Path) -> list[Checkpoint]:
    """Every ``checkpoint-N`` folder of ``output_dir``, oldest first, each judged complete or not."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = _FOLDER.fullmatch(child.name)
        if match and child.is_dir():
            found.append(_judge(child, int(match.group(1))))
    return sorted(found, key=lambda c: c.step)


def _judge(folder: Path, step: int) -> Checkpoint:
    """One checkpoint: complete only when nothing at all is wrong; every problem is named."""
    marker, problems = _read_marker(folder)
    if marker:
        problems += _marker_problems(folder, step, marker)
    problems += _layout_problems(folder, marker)
    problem = "; ".join(problems) if problems else None
    return Checkpoint(path=folder, step=step, complete=problem is None, problem=problem, marker=marker)


def _read_marker(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """The marker's content; no marker means rank 0 never got past the save (half-written)."""
    path = folder / MARKER
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, ["no marker (half-written?)"]
    except (OSError, ValueError) as err:
        return {}, [f"{MARKER} unreadable ({err})"]
    if not isinstance(content, dict) or not isinstance(content.get("files"), dict):
        return {}, [f"{MARKER} is not a completion marker (no file list)"]
    return content, []


def _marker_problems(folder: Path, step: int, marker: Mapping[str, Any]) -> list[str]:
    """What changed since the marker was written: a listed file gone or of another size."""
    problems = []
    if marker.get("save_only_model") is True:
        problems.append("saved with save_only_model (no optimizer or scheduler state to resume)")
    if "step" in marker and marker["step"] != step:
        problems.append(f"{MARKER} is for step {marker['step']}, not {step} (folder renamed or copied?)")
    for name, size in marker["files"].items():
        try:
            now = (folder / name).stat().st_size
        except OSError:
            problems.append(f"{name} missing (listed in {MARKER})")
            continue
        if now != size:
            problems.append(f"{name} is {now} bytes, {MARKER} recorded {size} (truncated or overwritten?)")
    return problems


def _layout_problems(folder: Path, marker: Mapping[str, Any]) -> list[str]:
    """The pieces a resume loads, whatever the marker says (a marker written by an older version, or
    by hand, may list less): the trainer state, then DeepSpeed's shards or DDP's optimizer."""
    problems = []
    if not (folder / "trainer_state.json").is_file():
        problems.append("trainer_state.json missing")
    if (folder / "latest").is_file():
        problems += _deepspeed_problems(folder, marker)
    elif not (folder / "optimizer.pt").is_file() and marker.get("save_only_model") is not True:
        problems.append("optimizer.pt missing (and no DeepSpeed 'latest' file)")
    return problems


def _deepspeed_problems(folder: Path, marker: Mapping[str, Any]) -> list[str]:
    """DeepSpeed's tag folder must hold one optimizer shard per rank (and, under ZeRO-3, one model
    shard per rank): a missing rank's shard is the typical result of a node dying mid-save."""
    tag = _tag(folder)
    if not tag:
        return ["'latest' is empty"]
    tag_dir = folder / tag
    if not tag_dir.is_dir():
        return [f"{tag}/ missing ('latest' names it)"]
    names = [p.name for p in tag_dir.iterdir()]
    optim = _ranks(_OPTIM_SHARD, names)
    model = _ranks(_MODEL_SHARD, names)
    if not model and _MODEL_STATES not in names:
        return [f"{tag}/: no model states ({_MODEL_STATES} or {_ZERO3_MODEL_STATES})"]
    if not marker:
        return []  # without a marker the checkpoint is already out; its world size is unknown
    world = _int_or_none(marker.get("world_size")) or _ds_topology(folder).get("world_size")
    if world is None:
        return [f"{tag}/: world size unknown (not in {MARKER}; model states unreadable)"]
    problems = _rank_problems(tag, "optimizer shard", "*_optim_states.pt", optim, world)
    if model:
        problems += _rank_problems(tag, "model shard", "*_model_states.pt", model, world)
    return problems


def _ranks(pattern: re.Pattern[str], names: list[str]) -> set[int]:
    """The ranks whose files matching ``pattern`` are present."""
    return {int(m.group(1)) for m in map(pattern.fullmatch, names) if m}


def _rank_problems(tag: str, what: str, glob: str, ranks: set[int], world: int) -> list[str]:
    """A shard for each rank 0..world-1 and none beyond (those would mean another world size)."""
    problems = []
    missing = sorted(set(range(world)) - ranks)
    extra = sorted(r for r in ranks if r >= world)
    if missing:
        problems.append(
            f"{tag}/: {what} of {_listed(missing)} missing "
            f"(one {glob} per rank of world size {world}; found {len(ranks)})"
        )
    if extra:
        problems.append(f"{tag}/: {what} of {_listed(extra)} beyond world size {world}")
    return problems


def _listed(numbers: list[int]) -> str:
    """``1`` -> "rank 1"; ``[0, 1]`` -> "ranks 0, 1"."""
    return ("rank " if len(numbers) == 1 else "ranks ") + ", ".join(map(str, numbers))


def _tag(folder: Path) -> str:
    """DeepSpeed's tag (``global_stepN``) named by ``latest``; empty when there is none."""
    try:
        return (folder / "latest").read_text().strip()
    except OSError:
        return ""


def latest_complete(output_dir: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest complete checkpoint, and a warning for each newer one skipped (why it was)."""
    warnings: list[str] = []
    for checkpoint in reversed(scan(output_dir)):
        if checkpoint.complete:
            return checkpoint, warnings
        warnings.append(f"skipping {checkpoint.path.name}: {checkpoint.problem}")
    return None, warnings


# --- topology -----------------------------------------------------------------------------------


def topology(checkpoint: Checkpoint) -> dict[str, int | None]:
    """World size, ZeRO stage and batch triad the checkpoint was saved under (None where unknown).

    Resuming must keep the global batch (resume-facts: otherwise the trainer's fast-forward silently
    re-trains samples) and must convert ZeRO checkpoints when the world size changes, so these
    decide the next attempt. The marker's values come first (no torch needed); DeepSpeed records
    the same in its model states, which fill whatever the marker lacks."""
    found: dict[str, int | None] = {k: _int_or_none(checkpoint.marker.get(k)) for k in TOPOLOGY_KEYS}
    if all(v is not None for v in found.values()):
        return found
    if (checkpoint.path / "latest").is_file():
        saved = _ds_topology(checkpoint.path)
    else:
        saved = {"zero_stage": 0, "micro": _trainer_micro(checkpoint.path)}
    for key, value in saved.items():
        if found[key] is None:
            found[key] = value
    return found


def _ds_topology(folder: Path) -> dict[str, int | None]:
    """The topology DeepSpeed recorded in rank 0's model states (ZeRO-3: its per-rank file)."""
    tag = _tag(folder)
    path = folder / tag / _MODEL_STATES
    if not path.is_file():
        path = folder / tag / _ZERO3_MODEL_STATES
    try:
        states = _torch_load(path)
    except Exception:  # a missing or corrupt file leaves every value unknown; scan names the file
        return {}
    config = states.get("ds_config") if isinstance(states, dict) else None
    if not isinstance(config, dict):
        config = {}
    zero = config.get("zero_optimization")
    return {
        "world_size": _int_or_none(states.get("dp_world_size")),
        "zero_stage": _int_or_none(zero.get("stage", 0)) if isinstance(zero, dict) else 0,
        "micro": _int_or_none(config.get("train_micro_batch_size_per_gpu")),
        "grad_accum": _int_or_none(config.get("gradient_accumulation_steps")),
        "global_batch": _int_or_none(config.get("train_batch_size")),
    }


def _torch_load(path: Path) -> Any:
    """DeepSpeed pickles more than tensors (its config, enums), hence ``weights_only=False``: only
    for files this run's own ranks wrote. Model states load without importing DeepSpeed."""
    import torch

    return torch.load(path, weights_only=False, map_location="cpu")


def _trainer_micro(folder: Path) -> int | None:
    """The per-device batch, the one batch value ``trainer_state.json`` records."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    return _int_or_none(state.get("train_batch_size")) if isinstance(state, dict) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    return value if _is_int(value) else None


# --- retention ----------------------------------------------------------------------------------


def prune(output_dir: Path, keep: int, protect: Path | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond the newest ``keep`` complete ones.

    The trainer's own rotation counts folders, complete or not, and could delete the last complete
    checkpoint while keeping half-written ones; this one counts complete checkpoints only, never
    deletes ``protect`` (the one the attempt resumed from) and leaves incomplete ones for a person
    to look at (they are reported on stderr). Returns the deleted folders."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    found = scan(output_dir)
    complete = [c for c in found if c.complete]
    guarded = protect.resolve() if protect is not None else None
    deleted = []
    for checkpoint in complete[:-keep]:
        if checkpoint.path.resolve() == guarded:
            continue
        _delete(checkpoint.path)
        deleted.append(checkpoint.path)
    for left in (c for c in found if not c.complete):
        print(f"ftlaunch: not pruning {left.path} (incomplete: {left.problem})", file=sys.stderr)
    return deleted


def _delete(folder: Path) -> None:
    """Marker first: a deletion cut short leaves a checkpoint that is plainly incomplete."""
    (folder / MARKER).unlink(missing_ok=True)
    _fsync_dir(folder)
    shutil.rmtree(folder)
