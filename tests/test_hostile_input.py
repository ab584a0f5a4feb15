"""Bad and hostile input, as a user or an attacker would type it: flags, job YAMLs, recipes and
their arguments, run folders and the environment. Every case is refused by the real CLI with exit
2 and a short message that names the value and the fix; nothing is written; no traceback (any
exception escaping ``main`` fails the test)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from launcher.cli import main

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@dataclass
class Case:
    id: str
    argv: list[str]
    fragments: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def job(text: str | bytes, *flags: str, fragments: list[str], id: str) -> Case:
    return Case(id, ["--job", "job.yaml", "--dry-run", *flags], fragments, {"job.yaml": text})


RECIPE = ["--procs", "1", "--dry-run", "recipe.py"]

CASES = [
    # ---- flags
    Case("fullwidth digit", ["--procs", "２", "recipe.py"], ["'２'", "integer"]),
    Case("superscript digit", ["--procs", "²", "recipe.py"], ["'²'", "integer"]),
    Case("arabic-indic digit", ["--gpus", "٣", "recipe.py"], ["'٣'", "integer"]),
    Case("flag-like value", ["--gpus=--5", "recipe.py"], ["'--5'", "integer"]),
    Case("hex integer", ["--global-batch", "0x10", "recipe.py"], ["'0x10'", "integer"]),
    Case("float for integer", ["--micro-batch", "1.5", "recipe.py"], ["'1.5'", "integer"]),
    Case("nan clipping", ["--max-grad-norm", "nan", "recipe.py"], ["'nan'", "a number"]),
    Case("infinite clipping", ["--max-grad-norm", "1e999", "recipe.py"], ["'1e999'", "a number"]),
    Case("inf clipping", ["--max-grad-norm", "inf", "recipe.py"], ["'inf'", "a number"]),
    Case("negative inf", ["--max-grad-norm=-inf", "recipe.py"], ["'-inf'", "a number"]),
    Case("repeated flag", ["--zero", "1", "--zero", "2", "recipe.py"], ["--zero given twice", "(1 and 2)"]),
    Case("repeated job", ["--job", "a.yaml", "--job", "b.yaml", "recipe.py"], ["--job given twice"]),
    Case("abbreviated flag", ["--proc", "2", "recipe.py"], ["--proc", "ftlaunch --help"]),
    Case("unknown flag", ["--gpu", "2", "recipe.py"], ["--gpu", "ftlaunch --help"]),
    Case("missing value", ["--procs"], ["--procs", "expected one argument"]),
    Case("bad choice", ["--resume", "yes", "recipe.py"], ["'yes'", "auto"]),
    Case(
        "dry-run after recipe",
        ["--procs", "1", "recipe.py", "--dry-run"],
        ["--dry-run after the recipe", "-- "],
    ),
    Case(
        "flags after recipe", ["recipe.py", "--procs", "2", "--zero", "2"], ["--procs --zero after", "before"]
    ),
    Case("flag=value after recipe", ["recipe.py", "--zero=2"], ["--zero after the recipe"]),
    Case(
        "too many procs", ["--procs", "100000", "--dry-run", "recipe.py"], ["--procs 100000", "at most 256"]
    ),
    Case("more procs than cores", ["--procs", str((os.cpu_count() or 1) + 1), "recipe.py"], ["CPU cores"]),
    Case(
        "too many nodes", ["--slurm", "--nodes", "5000", "--dry-run", "recipe.py"], ["--nodes 5000", "4096"]
    ),
    Case(
        "no gpu, no flag", ["recipe.py"], ["no GPU is visible", "--procs N"], env={"CUDA_VISIBLE_DEVICES": ""}
    ),
    Case("negative keep", ["--keep", "-1", "recipe.py"], ["--keep -1", "positive"]),
    Case("zero save steps", ["--save-steps", "0", "recipe.py"], ["--save-steps 0", "positive"]),
    Case("sbatch without =", ["--slurm", "--sbatch", "=x", "recipe.py"], ["--sbatch =x", "KEY=VALUE"]),
    Case("NUL in a flag value", ["--slurm", "--mem", "4G\0x", "recipe.py"], ["--mem", "NUL"]),
    Case("upper-case precision", ["--precision", "BF16", "recipe.py"], ["'BF16'", "bf16"]),
    Case("huge value echoed short", ["--zero", "9" * 5000, "recipe.py"], ["--zero"]),
    # ---- job YAMLs
    job(
        "topology: {procs: 2}\ntopology: {gpus: 8}\n",
        fragments=["'topology' appears twice", "line 2"],
        id="dup key",
    ),
    job("zero: {stage: 1, stage: 3}\n", fragments=["'stage' appears twice"], id="dup nested key"),
    job(LAUGHS, fragments=["aliases", "not supported"], id="billion laughs"),
    job("zero: &z {stage: 2}\nbatch: *z\n", fragments=["aliases"], id="alias"),
    job(b"name: caf\xe9\n", fragments=["not UTF-8", "UTF-8"], id="latin-1 bytes"),
    job("- procs: 2\n", fragments=["'top level' must be a mapping"], id="list at top"),
    job("args: [--seed, [1, 2]]\n", "recipe.py", fragments=["'args'", "list of strings"], id="nested arg"),
    job("args: --seed 1\n", "recipe.py", fragments=["'args'", "list of strings"], id="args as string"),
    job("args: [--seed, ~]\n", "recipe.py", fragments=["'args'", "list of strings"], id="null arg"),
    job("name: " + "x" * (1 << 20) + "\n", fragments=["1 MiB"], id="huge file"),
    job("topology: {procs: yes}\n", fragments=["'topology.procs'", "'yes'", "integer"], id="yes as int"),
    job("slurm: {exclusive: yes}\n", fragments=["'slurm.exclusive'", "true or false"], id="yes as bool"),
    job("zero: {stage: 1e999}\n", fragments=["'zero.stage'", "integer"], id="inf stage"),
    job("x" * 1000 + ": 1\n", fragments=["unknown key", "..."], id="huge unknown key"),
    job("zero:\n\tstage: 2\n", fragments=["not valid YAML"], id="tab indent"),
    job("zero: !!python/object:os.system {}\n", fragments=["not valid YAML"], id="python tag"),
    job("max_grad_norm: .nan\n", fragments=["'max_grad_norm'", "a number"], id="yaml nan"),
    Case("job is a folder", ["--job", "sub"], ["--job sub", "not a file"], {"sub/x": ""}),
    Case("dangling job link", ["--job", "gone.yaml"], ["gone.yaml", "no such file"]),
    # ---- recipes
    Case("job as recipe", ["--procs", "1", "job.yaml"], ["job file", "--job job.yaml"], {"job.yaml": "{}"}),
    Case("yml as recipe", ["--procs", "1", "j.yml"], ["job file", "--job j.yml"], {"j.yml": "{}"}),
    Case("recipe is a folder", ["--procs", "1", "pkg.py"], ["pkg.py", "not a file"], {"pkg.py/x": ""}),
    Case("not python", ["--procs", "1", "train.sh"], ["train.sh", ".py"], {"train.sh": "echo"}),
    Case("recipe like a flag", ["--procs", "1", "--", "-x.py"], ["-x.py", "./-x.py"], {"-x.py": ""}),
    Case("NUL in recipe", ["--procs", "1", "re\0cipe.py"], ["NUL"]),
    Case("missing recipe", ["--procs", "1", "nope.py"], ["nope.py", "no such file"]),
    # ---- recipe arguments
    Case("NUL in an argument", [*RECIPE, "--x", "a\0b"], ["recipe argument 2", "NUL"]),
    Case("argument too long", [*RECIPE, "y" * 200_000], ["recipe argument 1", "128 KiB"]),
    Case("arguments too long", [*RECIPE, *["z" * 1000] * 1100], ["at most 1 MiB"]),
    job('args: ["a\\0b"]\n', "recipe.py", fragments=["'args'", "NUL"], id="NUL in YAML arg"),
    job("args: [a\0b]\n", "recipe.py", fragments=["not valid YAML", "#x0000"], id="raw NUL in YAML"),
    # ---- run folders and names
    Case("name too long", ["--procs", "1", "--name", "n" * 240, "recipe.py"], ["--name", "100"]),
    Case("name with slash", ["--procs", "1", "--name", "a/b", "recipe.py"], ["--name", "/"]),
    Case(
        "runs dir is a file",
        ["--procs", "1", "--runs-dir", "recipe.py", "recipe.py"],
        ["recipe.py", "--runs-dir"],
    ),
    Case("resume nothing", ["resume", "nope"], ["no run 'nope'"]),
    Case("resume twice named", ["resume", "nope", "--procs", "1", "--procs", "2"], ["--procs given twice"]),
    Case(
        "configs out is a file",
        ["configs", "--zero", "2", "--write", "--out", "recipe.py"],
        ["recipe.py", "is a file"],
    ),
    Case(
        "configs overwrite",
        ["configs", "--zero", "2", "--write", "--out", "cfg"],
        ["accelerate.yaml", "--force"],
        {"cfg/accelerate.yaml": "# edited by hand\n"},
    ),
    Case("status unknown", ["status", "nope"], ["no run 'nope'"]),
    # ---- environment
    Case(
        "GPU UUIDs, no driver",
        ["--gpus", "1", "recipe.py"],
        ["--gpus 1", "no GPU is visible"],
        env={"CUDA_VISIBLE_DEVICES": "GPU-8f3a1c2e-0000-0000-0000-000000000000"},
    ),
]


def fake_nvidia_smi(folder: Path, rows: str) -> None:
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '{rows}'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.lstat().st_mtime for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_clearly_and_nothing_written(
    case: Case, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, content in case.files.items():
        path = in_tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if case.id == "dangling job link":
        (in_tmp / "gone.yaml").symlink_to(in_tmp / "missing")
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = snapshot(in_tmp)
    code = main(case.argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, f"exit {code}; stderr:\n{err[:2000]}"
    assert err.startswith("ftlaunch: "), err[:2000]
    for fragment in case.fragments:
        assert fragment in err, f"{fragment!r} missing from:\n{err[:2000]}"
    lines = err.splitlines()
    assert len(lines) <= 6 and max(len(line) for line in lines) <= 400, f"message too long:\n{err[:3000]}"
    assert "Traceback" not in err and captured.out == ""
    assert snapshot(in_tmp) == before, "a refused command must write nothing"


def test_unknown_compute_capability_is_no_crash(
    in_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``nvidia-smi`` may say ``[N/A]``: the GPU is counted, its capability just not checked."""
    fake_nvidia_smi(tmp_path, "0, GPU-aaaa, Tesla T4, [N/A]\\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main(["--gpus", "2", "recipe.py"]) == 2
    assert "only 1 GPU(s) visible" in capsys.readouterr().err


def test_gpus_listed_by_uuid_are_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.machine.hardware import probe

    fake_nvidia_smi(
        tmp_path, "0, GPU-aaaa-1, H100, 9.0\\n1, GPU-bbbb-2, H100, 9.0\\n2, GPU-cccc-3, H100, 9.0\\n"
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,2")
    assert probe().gpu_names == ("H100", "H100")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa-1")
    assert probe().gpu_count == 1
