"""``launcher.checkpoints`` against real checkpoints: the shipped SFT recipe trained under plain
``accelerate launch`` on 2 CPU processes (ZeRO-2 + LoRA, plain DDP + LoRA, ZeRO-3 full fine-tune),
then marked complete as the launcher does, and broken in copies the ways a dying node breaks them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from launcher.records import checkpoints
from launcher.records.checkpoints import MARKER, Checkpoint, CheckpointError
from launcher.records.universal import to_universal

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--per_device_train_batch_size", "2", "--logging_steps", "1", "--report_to", "none"]
# name -> (accelerate config, recipe arguments): ZeRO-2 saves twice, the others once (they cost the same
# start-up and only one of their checkpoints is needed).
RUNS = {
    "zero2": ("zero2.yaml", ["--use_peft", "--max_steps", "4", "--save_steps", "2"]),
    "ddp": ("ddp.yaml", ["--use_peft", "--max_steps", "2", "--save_steps", "2"]),
    "zero3": ("zero3.yaml", ["--max_steps", "2", "--save_steps", "2"]),
}
# What ftlaunch's rank 0 records (launcher.saving.mark) for these runs: 2 ranks x micro 2 x accumulation 1.
SAVED = {"world_size": 2, "micro": 2, "grad_accum": 1, "global_batch": 4, "save_only_model": False}
STAGE = {"zero2": 2, "ddp": 0, "zero3": 3}
SHARD = "global_step4/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"  # bf16: TRL's default precision


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three runs' output folders, unmarked; launched side by side to keep the wall time down."""
    root = tmp_path_factory.mktemp("trained")
    env = {
        **os.environ,
        "FTLAUNCH_TINY_DIR": str(root / "tiny"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")
        ),
    }
    tiny = [sys.executable, "jobs/make_tiny.py", str(root / "tiny")]
    subprocess.run(tiny, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    procs = {}
    for name, (config, args) in RUNS.items():
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2"]
        launch += ["--config_file", f"accelerate_configs/{config}", "--main_process_port", "0"]
        argv = [*launch, "jobs/sft.py", "--output_dir", str(root / name), *COMMON, *args]
        log = (root / f"{name}.log").open("w")
        procs[name] = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    for name, proc in procs.items():
        code = proc.wait(timeout=400)
        assert code == 0, f"{name} training failed:\n{(root / f'{name}.log').read_text()[-3000:]}"
    return {name: root / name for name in RUNS}


def copy_run(trained: dict[str, Path], name: str, dest: Path, info: dict[str, Any] | None = None) -> Path:
    """A private copy of a run's checkpoints, each marked with ``info`` (the launcher's by default)."""
    out = dest / name
    for folder in sorted(trained[name].glob("checkpoint-*")):
        shutil.copytree(folder, out / folder.name)
        step = int(folder.name.split("-")[1])
        marker = (
            {"step": step, "zero_stage": STAGE[name], **SAVED} if info is None else {"step": step, **info}
        )
        checkpoints.mark_complete(out / folder.name, marker)
    return out


def by_step(output_dir: Path) -> dict[int, Checkpoint]:
    return {c.step: c for c in checkpoints.scan(output_dir)}


def test_committed_presets_train_with_plain_accelerate(trained: dict[str, Path]) -> None:
    """The presets are for users who launch by hand: ``accelerate launch`` with a preset (every
    trainer-owned number "auto") trains the recipe on 2 processes, no ftlaunch involved; the
    fixture's three runs are exactly that, with the ZeRO-2, DDP and ZeRO-3 presets."""
    for name, deepspeed in (("zero2", True), ("ddp", False), ("zero3", True)):
        checkpoint = sorted(trained[name].glob("checkpoint-*"))[-1]
        assert (checkpoint / f"global_step{checkpoint.name.split('-')[1]}").is_dir() == deepspeed, name
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        assert state["train_batch_size"] == 2 and any("loss" in e for e in state["log_history"]), name


# --- complete checkpoints -----------------------------------------------------------------------


def test_marked_checkpoints_are_complete_and_the_newest_is_used(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    out = copy_run(trained, "zero2", tmp_path)
    found = checkpoints.scan(out)
    assert [(c.step, c.complete, c.problem) for c in found] == [(2, True, None), (4, True, None)]
    latest, warnings = checkpoints.latest_complete(out)
    assert latest is not None and latest.path == out / "checkpoint-4" and warnings == []


def test_unmarked_checkpoints_are_never_complete(trained: dict[str, Path]) -> None:
    """What the trainer alone leaves behind: every piece there, but nobody vouched for it."""
    found = checkpoints.scan(trained["zero2"])
    assert [c.problem for c in found] == ["no marker (half-written?)"] * 2
    assert checkpoints.latest_complete(trained["zero2"]) == (
        None,
        [
            "skipping checkpoint-4: no marker (half-written?)",
            "skipping checkpoint-2: no marker (half-written?)",
        ],
    )


def test_the_marker_lists_every_file_with_its_size_and_is_written_atomically(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    out = copy_run(trained, "zero2", tmp_path)
    folder = out / "checkpoint-4"
    marker = json.loads((folder / MARKER).read_text())
    assert marker["world_size"] == 2 and marker["step"] == 4
    on_disk = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    del on_disk[MARKER]
    assert marker["files"] == on_disk
    assert {"latest", "trainer_state.json", SHARD, "global_step4/mp_rank_00_model_states.pt"} <= set(on_disk)
    assert not [p for p in folder.iterdir() if p.name.startswith(f".{MARKER}")]  # no temp file left
    assert by_step(out)[4].marker == marker


def test_missing_output_dir_and_other_folders_are_ignored(tmp_path: Path) -> None:
    assert checkpoints.scan(tmp_path / "nowhere") == []
    for name in ("tmp-checkpoint-5", "checkpoint-x", "checkpoint-7.old"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-8").write_text("a file, not a folder")
    assert checkpoints.scan(tmp_path) == []
    assert checkpoints.latest_complete(tmp_path) == (None, [])


# --- topology -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_topology_is_read_from_deepspeeds_model_states_when_the_marker_lacks_it(
    trained: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """ZeRO-2 records it in ``mp_rank_00_model_states.pt``, ZeRO-3 in each rank's
    ``zero_pp_rank_R_mp_rank_00_model_states.pt``."""
    out = copy_run(trained, name, tmp_path, info={})
    latest, _ = checkpoints.latest_complete(out)
    assert latest is not None and latest.complete
    assert checkpoints.topology(latest) == {
        "world_size": 2,
        "zero_stage": STAGE[name],
        "micro": 2,
        "grad_accum": 1,
        "global_batch": 4,
    }


def test_topology_comes_from_the_marker_when_it_has_it(trained: dict[str, Path], tmp_path: Path) -> None:
    """No DeepSpeed file is read then: with the model states gone the answer is the same, and where
    the marker disagrees with DeepSpeed's record the marker wins."""
    out = copy_run(trained, "zero2", tmp_path)
    latest, _ = checkpoints.latest_complete(out)
    assert latest is not None
    (latest.path / "global_step4" / "mp_rank_00_model_states.pt").unlink()
    expected = {"world_size": 2, "zero_stage": 2, "micro": 2, "grad_accum": 1, "global_batch": 4}
    assert checkpoints.topology(latest) == expected

    other = {"world_size": 2, "zero_stage": 1, "micro": 1, "grad_accum": 2, "global_batch": 4}
    out = copy_run(trained, "zero2", tmp_path / "other", info=other)
    latest, _ = checkpoints.latest_complete(out)
    assert latest is not None and checkpoints.topology(latest) == other


def test_a_partial_marker_is_completed_from_deepspeeds_files(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    out = copy_run(trained, "zero2", tmp_path, info={"world_size": 2, "micro": 2})
    latest, _ = checkpoints.latest_complete(out)
    assert latest is not None
    assert checkpoints.topology(latest) == {
        "world_size": 2,
        "zero_stage": 2,
        "micro": 2,
        "grad_accum": 1,
        "global_batch": 4,
    }


def test_plain_ddp_checkpoint(trained: dict[str, Path], tmp_path: Path) -> None:
    """A full ``optimizer.pt`` and no ``latest``: the topology is the marker's (the trainer state
    knows only the per-device batch), and there is nothing to convert."""
    out = copy_run(trained, "ddp", tmp_path)
    (only,) = checkpoints.scan(out)
    assert only.complete and (only.path / "optimizer.pt").is_file() and not (only.path / "latest").exists()
    saved = {"world_size": 2, "zero_stage": 0, "micro": 2, "grad_accum": 1, "global_batch": 4}
    assert checkpoints.topology(only) == saved
    bare = copy_run(trained, "ddp", tmp_path / "bare", info={})
    (only,) = checkpoints.scan(bare)
    expected = {"world_size": None, "zero_stage": 0, "micro": 2, "grad_accum": None, "global_batch": None}
    assert checkpoints.topology(only) == expected
    with pytest.raises(CheckpointError, match=r"checkpoint-2: not a DeepSpeed checkpoint"):
        to_universal(only)


def test_plain_ddp_without_optimizer_state_is_not_resumable(trained: dict[str, Path], tmp_path: Path) -> None:
    only_model = copy_run(trained, "ddp", tmp_path / "a", info={**SAVED, "save_only_model": True})
    (found,) = checkpoints.scan(only_model)
    assert not found.complete and found.problem is not None and "save_only_model" in found.problem

    gone = copy_run(trained, "ddp", tmp_path / "b")
    (gone / "checkpoint-2" / "optimizer.pt").unlink()
    (found,) = checkpoints.scan(gone)
    assert found.problem == (
        f"optimizer.pt missing (listed in {MARKER}); optimizer.pt missing (and no DeepSpeed 'latest' file)"
    )


# --- truncated checkpoints ----------------------------------------------------------------------


def _lose_shard(folder: Path) -> None:
    (folder / SHARD).unlink()


def _lose_marker(folder: Path) -> None:
    (folder / MARKER).unlink()


def _truncate_shard(folder: Path) -> None:
    path = folder / SHARD
    path.write_bytes(path.read_bytes()[:1000])


def _grow_adapter(folder: Path) -> None:
    with (folder / "adapter_model.safetensors").open("ab") as f:
        f.write(b"\0" * 16)


def _corrupt_marker(folder: Path) -> None:
    (folder / MARKER).write_text('{"files": {')


def _lose_trainer_state(folder: Path) -> None:
    (folder / "trainer_state.json").unlink()


BREAKS = {
    "rank shard deleted": (
        _lose_shard,
        "global_step4/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt missing",
    ),
    "marker missing": (_lose_marker, "no marker (half-written?)"),
    "shard truncated": (_truncate_shard, "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt is 1000 bytes"),
    "file grew": (_grow_adapter, "adapter_model.safetensors is "),
    "marker corrupt": (_corrupt_marker, "ftlaunch_complete.json unreadable"),
    "trainer state deleted": (_lose_trainer_state, "trainer_state.json missing"),
}


@pytest.mark.parametrize("how", list(BREAKS))
def test_a_broken_newest_checkpoint_is_skipped_with_a_warning_naming_it(
    trained: dict[str, Path], tmp_path: Path, how: str
) -> None:
    out = copy_run(trained, "zero2", tmp_path)
    breaks, named = BREAKS[how]
    breaks(out / "checkpoint-4")
    latest, warnings = checkpoints.latest_complete(out)
    assert latest is not None and latest.path == out / "checkpoint-2"
    assert len(warnings) == 1 and warnings[0].startswith("skipping checkpoint-4: "), warnings
    assert named in warnings[0]
    assert by_step(out)[2].complete


def test_a_rank_shard_missing_before_marking_is_caught_by_the_layout_check(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A marker written while one rank's shard was absent lists only what was there; the per-rank
    check over the marker's world size still refuses it (also under ZeRO-3, model states too)."""
    out = tmp_path / "zero2"
    shutil.copytree(trained["zero2"], out)
    _lose_shard(out / "checkpoint-4")
    for step in (2, 4):
        checkpoints.mark_complete(out / f"checkpoint-{step}", {"step": step, "zero_stage": 2, **SAVED})
    latest, warnings = checkpoints.latest_complete(out)
    assert latest is not None and latest.step == 2
    assert warnings == [
        "skipping checkpoint-4: global_step4/: optimizer shard of rank 1 missing "
        "(one *_optim_states.pt per rank of world size 2; found 1)"
    ]

    z3 = tmp_path / "zero3"
    shutil.copytree(trained["zero3"], z3)
    (z3 / "checkpoint-2" / "global_step2" / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    checkpoints.mark_complete(z3 / "checkpoint-2", {"step": 2, "zero_stage": 3, **SAVED})
    (found,) = checkpoints.scan(z3)
    assert found.problem is not None and "model shard of rank 1 missing" in found.problem


def test_a_marker_claiming_a_smaller_world_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    out = copy_run(trained, "zero2", tmp_path, info={**SAVED, "world_size": 1})
    (_, newest) = checkpoints.scan(out)
    assert newest.problem is not None and "optimizer shard of rank 1 beyond world size 1" in newest.problem


# --- universal conversion -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_to_universal_converts_inside_the_checkpoint_once(
    trained: dict[str, Path], tmp_path: Path, name: str
) -> None:
    out = copy_run(trained, name, tmp_path)
    latest, _ = checkpoints.latest_complete(out)
    assert latest is not None
    folder, tag = latest.path, (latest.path / "latest").read_text().strip()
    (folder / ".ftlaunch-universal-crashed").mkdir()  # a crashed earlier attempt's staging folder

    universal = to_universal(latest)

    assert universal == folder / f"{tag}_universal" and (universal / "zero").is_dir()
    assert (folder / "latest_universal").read_text() == f"{tag}_universal"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert by_step(out)[latest.step].complete  # converting does not touch what the marker vouches for
    stamp = (folder / "latest_universal").stat().st_mtime_ns, universal.stat().st_mtime_ns
    started = time.monotonic()
    assert to_universal(latest) == universal
    assert time.monotonic() - started < 1  # no converter run (importing DeepSpeed alone takes seconds)
    assert ((folder / "latest_universal").stat().st_mtime_ns, universal.stat().st_mtime_ns) == stamp


def test_a_universal_folder_not_named_by_latest_universal_is_redone(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """Renamed into place just before a crash, or a hand-run conversion: not trusted."""
    out = copy_run(trained, "zero2", tmp_path)
    latest, _ = checkpoints.latest_complete(out)
    assert latest is not None
    (latest.path / "global_step4_universal" / "zero").mkdir(parents=True)
    universal = to_universal(latest)
    assert list((universal / "zero").iterdir())
    assert (latest.path / "latest_universal").read_text() == "global_step4_universal"


def test_a_failed_conversion_names_the_checkpoint_and_leaves_nothing(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    out = copy_run(trained, "zero2", tmp_path)
    latest, _ = checkpoints.latest_complete(out)
    assert latest is not None
    for shard in (latest.path / "global_step4").glob("*_optim_states.pt"):
        shard.unlink()  # after the scan: the converter itself must fail
    with pytest.raises(
        CheckpointError, match=r"checkpoint-4: converting to a universal checkpoint failed"
    ) as err:
        to_universal(latest)
    assert "Traceback" in str(err.value) or "Error" in str(err.value)
    left = {p.name for p in latest.path.iterdir()}
    assert "latest_universal" not in left and "global_step4_universal" not in left
    assert not [n for n in left if n.startswith(".")]


def test_an_incomplete_checkpoint_is_not_converted(trained: dict[str, Path]) -> None:
    (_, newest) = checkpoints.scan(trained["zero2"])
    with pytest.raises(CheckpointError, match=r"checkpoint-4: not converting an incomplete checkpoint"):
        to_universal(newest)


# --- retention ----------------------------------------------------------------------------------


def test_prune_keeps_the_newest_complete_the_protected_and_every_incomplete_one(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Complete 2, 4, 6, 8, 10 (copies of the real ones), incomplete 3 (no marker) and 12 (a rank's
    shard lost); keep 2, protect 2 (resumed from): 4 and 6 go, nothing else."""
    out = tmp_path / "out"
    source = trained["zero2"]
    for step in (2, 4, 6, 8, 10, 12):
        folder = out / f"checkpoint-{step}"
        shutil.copytree(source / ("checkpoint-2" if step % 4 else "checkpoint-4"), folder)
        checkpoints.mark_complete(folder, {"step": step, **SAVED})
    shutil.copytree(source / "checkpoint-2", out / "checkpoint-3")
    _lose_shard(out / "checkpoint-12")

    deleted = checkpoints.prune(out, keep=2, protect=out / "checkpoint-2")

    assert deleted == [out / "checkpoint-4", out / "checkpoint-6"]
    assert sorted(c.step for c in checkpoints.scan(out)) == [2, 3, 8, 10, 12]
    assert [c.step for c in checkpoints.scan(out) if c.complete] == [2, 8, 10]
    err = capsys.readouterr().err
    assert "not pruning" in err and "checkpoint-3 (incomplete: no marker" in err and "checkpoint-12" in err
    assert checkpoints.prune(out, keep=2, protect=out / "checkpoint-2") == []
    assert checkpoints.prune(out, keep=1, protect=None) == [out / "checkpoint-2", out / "checkpoint-8"]
    assert sorted(c.step for c in checkpoints.scan(out)) == [3, 10, 12]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        checkpoints.prune(out, keep=0, protect=None)
