"""What this machine runs with: ``ftlaunch env`` prints it, and every launch records it in the
attempt's ``environment.json``, so "which transformers was that run on?" has an answer later.

Half of all launch failures are the stack, not the spec (a DeepSpeed op that never built, a
variable left in the shell, a SLURM controller that does not answer), so the facts are gathered
without importing any of the libraries they describe: versions come from the installed package
metadata, GPUs from ``nvidia-smi`` (``machine/hardware.py``), DeepSpeed's ops from torch's extension
cache and DeepSpeed's install record. ``facts`` is pure; the small gatherers around it are the
only code that runs commands or reads files, each with a short timeout.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher import redact
from launcher.machine import opcache

if TYPE_CHECKING:
    from launcher.machine.hardware import Hardware


LIBRARIES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "deepspeed",
    "bitsandbytes",
    "submitit",
)


VARIABLE_PREFIXES = ("NCCL_", "TORCH_", "MASTER_", "GLOO_")


VARIABLE_NAMES = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


SLURM_TIMEOUT = 5.0  # sinfo asks slurmctld; a controller that does not answer in this time is "unreachable"


GIT_TIMEOUT = 2.0


NOT_INSTALLED = "not installed"


NO_VARIABLES = "none of NCCL_*, TORCH_*, CUDA_VISIBLE_DEVICES, MASTER_*, GLOO_*, OMP_NUM_THREADS set"


# ---------------------------------------------------------------- gatherers (side effects)


def version() -> str:
    """ftlaunch's own version: the installed metadata, else the source tree's ``__version__``."""
    import importlib.metadata

    try:
        return importlib.metadata.version("ftlaunch")
    except importlib.metadata.PackageNotFoundError:
        import launcher

        return str(getattr(launcher, "__version__", "unknown"))


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions read from package metadata (importing torch alone would take seconds)."""
    import importlib.metadata

    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def jit_built_ops(env: Mapping[str, str]) -> list[str]:
    """Op folders of torch's extension cache holding a built library, as ``build/op`` (or ``op``
    when ``TORCH_EXTENSIONS_DIR`` names the build folder itself). Only this Python's build folders
    count: torch names them ``py311_cu124``-like, and the CUDA half needs torch to spell."""
    root = opcache.cache_root(env)
    prefix = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}_"
    try:
        if "TORCH_EXTENSIONS_DIR" in env:
            folders = [p for p in root.iterdir() if p.is_dir()]
        else:
            builds = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix)]
            folders = [op for build in builds for op in build.iterdir() if op.is_dir()]
        return sorted(str(op.relative_to(root)) for op in folders if any(op.glob("*.so")))
    except OSError:  # no cache yet, or one we may not read
        return []


def prebuilt_ops() -> list[str] | None:
    """Ops compiled when DeepSpeed was installed (``DS_BUILD_OPS=1``), from the ``installed_ops``
    DeepSpeed's setup wrote into its package; None when DeepSpeed is not installed. The file is
    parsed, not imported: importing any part of deepspeed imports torch."""
    import importlib.util

    spec = importlib.util.find_spec("deepspeed")  # a top-level find_spec imports nothing
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "git_version_info_installed.py"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "installed_ops" for t in node.targets
        ):
            try:
                ops = ast.literal_eval(node.value)
            except ValueError:
                return []
            return sorted(str(op) for op, built in ops.items() if built) if isinstance(ops, dict) else []
    return []


def run_quietly(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str] | str:
    """The finished command, or why it could not run (no such program, no answer in time)."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired:
        return f"no answer in {timeout:g} s"
    except (OSError, UnicodeDecodeError) as err:
        return str(err)


def slurm_reach(timeout: float = SLURM_TIMEOUT) -> dict[str, Any]:
    """Whether this machine can talk to a SLURM controller, and its partitions (``*`` marks the
    default one, as sinfo prints it)."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return {"state": NOT_INSTALLED}
    done = run_quietly([sinfo, "-h", "-o", "%P"], timeout)
    if isinstance(done, str):
        return {"state": "unreachable", "error": done}
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or [f"sinfo exited with {done.returncode}"])[0]
        return {"state": "unreachable", "error": first[:200]}
    partitions = list(dict.fromkeys(p.strip() for p in done.stdout.splitlines() if p.strip()))
    return {"state": "reachable", "partitions": partitions}


def git_state(folder: Path, timeout: float = GIT_TIMEOUT) -> dict[str, Any] | None:
    """The commit the recipe's folder is checked out at and whether its tree has changes (untracked
    files count: an unadded recipe is not in the commit); None when it is not in a git repository.
    ``dirty`` is None when git did not answer in time."""
    git = shutil.which("git")
    if git is None:
        return None
    head = run_quietly([git, "-C", str(folder), "rev-parse", "HEAD"], timeout)
    if isinstance(head, str) or head.returncode != 0:
        return None
    changes = run_quietly([git, "-C", str(folder), "status", "--porcelain"], timeout)
    dirty = None if isinstance(changes, str) or changes.returncode != 0 else bool(changes.stdout.strip())
    return {"commit": head.stdout.strip(), "dirty": dirty}


def probe_hardware() -> Hardware:
    from launcher.machine.hardware import probe

    return probe()


# ---------------------------------------------------------------- the facts (pure)


def variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that change how the ranks talk and compute. The run records' rule decides
    what is kept (secrets by name dropped, URL credentials masked), and a value that holds a
    token-looking string is masked whole on top: this is printed, and pasted into issues."""
    kept = redact.recorded_env(env)
    return {
        k: "***" if v == env[k] and redact.looks_secret(v) else v
        for k, v in kept.items()
        if k.startswith(VARIABLE_PREFIXES) or k in VARIABLE_NAMES
    }


def gpu_facts(hw: Hardware) -> list[dict[str, Any]]:
    return [
        {"index": i, "name": name, "compute_capability": cap}
        for i, (name, cap) in enumerate(zip(hw.gpu_names, hw.compute_capabilities, strict=True))
    ]


def facts(
    *,
    ftlaunch: str,
    libraries: Mapping[str, str | None],
    hw: Hardware,
    ops_cache: str,
    jit_built: list[str],
    prebuilt: list[str] | None,
    slurm: Mapping[str, Any],
    env: Mapping[str, str],
) -> dict[str, Any]:
    """Everything ``ftlaunch env`` shows, as one JSON-able dict (``environment.json`` holds it)."""
    return {
        "ftlaunch": ftlaunch,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "host": platform.node(),
        "libraries": dict(libraries),
        "gpus": gpu_facts(hw),
        "cpus": hw.cpus,
        "deepspeed_ops": {"cache": ops_cache, "jit_built": jit_built, "prebuilt": prebuilt},
        "slurm": dict(slurm),
        "variables": variables(env),
    }


# ---------------------------------------------------------------- gathering


def gather(env: Mapping[str, str], check_slurm: bool = True) -> dict[str, Any]:
    """The facts of this machine now. ``nvidia-smi`` and ``sinfo`` run side by side, so the slower
    one alone sets the time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        hw = pool.submit(probe_hardware)
        slurm = pool.submit(slurm_reach) if check_slurm else None
        return facts(
            ftlaunch=version(),
            libraries=library_versions(),
            hw=hw.result(),
            ops_cache=str(opcache.cache_root(env)),
            jit_built=jit_built_ops(env),
            prebuilt=prebuilt_ops(),
            slurm=slurm.result() if slurm else {"state": "not checked (local launch)"},
            env=env,
        )


def at_launch(cwd: str, recipe_path: str | None, backend: str) -> dict[str, Any]:
    """What ``environment.json`` records for an attempt: the facts of the launching machine and the
    recipe's git commit. SLURM is asked only for a SLURM launch (a local one does not depend on it);
    git runs beside ``nvidia-smi`` to keep the launch fast."""
    recipe = Path(cwd, recipe_path or ".")
    with ThreadPoolExecutor(max_workers=1) as pool:
        git = pool.submit(git_state, recipe.parent)
        found = gather(os.environ, check_slurm=backend == "slurm")
        found["recipe"] = {"path": str(recipe), "git": git.result()}
    return found


# ---------------------------------------------------------------- text


def render(found: Mapping[str, Any]) -> str:
    """The facts as aligned ``name  value`` lines; a multi-valued fact continues on indented lines."""
    rows: list[tuple[str, list[str]]] = [
        ("ftlaunch", [found["ftlaunch"]]),
        ("python", [f"{found['python']} ({found['python_executable']})"]),
    ]
    rows += [(name, [v or NOT_INSTALLED]) for name, v in found["libraries"].items()]
    rows += [
        ("GPUs", gpu_lines(found["gpus"], found["cpus"])),
        ("DeepSpeed ops", ops_lines(found["deepspeed_ops"])),
        ("SLURM", [slurm_line(found["slurm"])]),
        ("variables", [f"{k}={v}" for k, v in found["variables"].items()] or [NO_VARIABLES]),
    ]
    if "recipe" in found:
        rows.append(("recipe", recipe_lines(found["recipe"])))
    width = max(len(name) for name, _ in rows) + 2
    lines = []
    for name, values in rows:
        lines.append(f"{name.ljust(width)}{values[0]}")
        lines += [" " * width + v for v in values[1:]]
    return "\n".join(lines) + "\n"


def gpu_lines(gpus: list[dict[str, Any]], cpus: int | None) -> list[str]:
    if not gpus:
        return [f"none (CPU only; {cpus or '?'} usable CPU cores)"]
    return [
        f"cuda:{g['index']} {g['name']} (compute capability {g['compute_capability'] or 'unknown'})"
        for g in gpus
    ]


def ops_lines(ops: Mapping[str, Any]) -> list[str]:
    built = ", ".join(ops["jit_built"]) or "none yet (each op builds on first use)"
    lines = [f"built in {ops['cache']}: {built}"]
    if ops["prebuilt"] is None:
        lines.append("prebuilt at install: - (deepspeed not installed)")
    else:
        lines.append(f"prebuilt at install: {', '.join(ops['prebuilt']) or 'none'}")
    return lines


def slurm_line(slurm: Mapping[str, Any]) -> str:
    state = str(slurm.get("state"))
    if state == "reachable":
        return f"reachable: partitions {', '.join(slurm.get('partitions', [])) or '(none)'}"
    if state == "unreachable":
        return f"unreachable: {slurm.get('error', '')}"
    return state


def recipe_lines(recipe: Mapping[str, Any]) -> list[str]:
    git = recipe.get("git")
    if git is None:
        return [f"{recipe['path']} (not in a git repository)"]
    dirty = {True: "with uncommitted changes", False: "clean", None: "state unknown"}[git.get("dirty")]
    return [f"{recipe['path']}", f"git {git['commit']} ({dirty})"]


def json_text(found: Mapping[str, Any]) -> str:
    return json.dumps(found, indent=2) + "\n"
