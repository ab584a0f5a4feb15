"""Pre-flight: a recipe that would crash on the nodes is refused before anything is spawned or queued.

Tutorial-era scripts die on current releases at the first outdated keyword, on every rank, after
the model loaded (on a cluster: after the queue). This reads the recipe's syntax tree, without
running it, and checks it against the installed libraries (their source, read by
``machine/libsource.py``, so nothing heavy is imported):

- keywords given to TrainingArguments / TRL's configs / the trainers that were renamed, moved or
  removed (``machine/drift.py``), or that the installed class does not take at all;
- names imported from transformers, trl, peft, datasets that were removed or moved;
- recipe arguments that the recipe's ``TrlParser`` / ``HfArgumentParser`` dataclasses do not accept;
- values that cannot work where the run goes: an optimizer that needs CUDA on CPU processes, bf16
  on GPUs without it, ``report_to`` integrations that are not installed, local model or data paths
  that do not exist here.

What is only known at run time (a value computed by the recipe, a parser built dynamically) gets no
check rather than a guess: a false alarm would stop a launch that works.
"""

from __future__ import annotations

import ast
import difflib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launcher.machine import drift, libsource
from launcher.spec.recipeargs import parse_flags

WATCHED = ("transformers", "trl", "peft", "datasets")


PARSERS = ("TrlParser", "HfArgumentParser")


# optim values that need CUDA: bitsandbytes' 8-bit and paged optimizers, apex's fused Adam.
CUDA_OPTIMIZER_MARKS = ("8bit", "paged", "bnb", "apex")


# report_to name -> the distributions that provide it (any one will do)
INTEGRATIONS = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "comet_ml": ("comet-ml",),
    "clearml": ("clearml",),
    "neptune": ("neptune", "neptune-client"),
    "dvclive": ("dvclive",),
    "trackio": ("trackio",),
    "swanlab": ("swanlab",),
    "codecarbon": ("codecarbon",),
}


SLOW_CPU_OPTIMIZERS = ("adamw_torch",)  # torch's for-loop AdamW on CPU tensors (foreach is not faster there)


FAST_CPU_OPTIMIZER = "adamw_torch_fused"  # what ftlaunch gives an offloaded run (render/trainer.py)


DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".arrow")


@dataclass(frozen=True)
class Where:
    """Where the run will go, as far as this machine can tell."""

    on_cpu: bool
    capabilities: tuple[float | None, ...] | None  # the local GPUs' compute capabilities; None: unknown
    cwd: Path
    offload_optimizer: bool = False  # the optimizer step runs on the CPU


@dataclass(frozen=True)
class Finding:
    line: int
    message: str
    note: bool = False  # worth knowing, but the launch goes ahead


@dataclass
class Recipe:
    """The recipe's syntax tree and what its names stand for."""

    path: Path
    tree: ast.Module
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # local -> (module, name)
    modules: dict[str, str] = field(default_factory=dict)  # local -> module
    dataclasses: dict[str, ast.ClassDef] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Recipe:
        recipe = cls(path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for node in ast.walk(recipe.tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    recipe.names[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    recipe.modules[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
            elif isinstance(node, ast.ClassDef) and any(
                "dataclass" in ast.unparse(d) for d in node.decorator_list
            ):
                recipe.dataclasses[node.name] = node
        return recipe

    def resolve(self, node: ast.expr) -> tuple[str, str] | None:
        """(module, name) of a callee or class reference: ``SFTConfig`` or ``trl.SFTConfig``."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in self.modules
        ):
            return (self.modules[node.value.id], node.attr)
        return None


def check(path: Path, args: Sequence[str], where: Where) -> list[Finding]:
    """Every problem found, in the recipe's line order."""
    try:
        recipe = Recipe.read(path)
    except SyntaxError as err:  # every rank would die on it too
        return [Finding(err.lineno or 1, f"the recipe is not valid Python: {err.msg}")]
    except (OSError, UnicodeDecodeError, ValueError):
        return []  # unreadable here: the launch's own checks say so; nothing to add
    found = [*imports(recipe), *calls(recipe, where), *recipe_arguments(recipe, args, where)]
    return sorted(set(found), key=lambda f: (f.line, f.message))


# ---------------------------------------------------------------- imports


def imports(recipe: Recipe) -> Iterator[Finding]:
    for node in ast.walk(recipe.tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in WATCHED:
            for alias in node.names:
                change = drift.name_change(node.module, alias.name)
                if change is not None:
                    yield Finding(node.lineno, f"`from {node.module} import {alias.name}`: {change.fix()}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = recipe.modules.get(node.value.id)
            change = drift.name_change(module, node.attr) if module in WATCHED else None
            if change is not None:
                yield Finding(node.lineno, f"`{module}.{node.attr}`: {change.fix()}")


# ---------------------------------------------------------------- calls


def calls(recipe: Recipe, where: Where) -> Iterator[Finding]:
    for node in ast.walk(recipe.tree):
        if not isinstance(node, ast.Call):
            continue
        target = recipe.resolve(node.func)
        if target is None or target[0].split(".")[0] not in WATCHED:
            continue
        _, name = target
        if name in drift.CONFIGS or name in drift.TRAINERS:
            yield from keywords(node, name)
        if name in drift.CONFIGS:
            yield from config_values(node, where)
        if name == "load_dataset":
            yield from dataset_paths(node, where)


def keywords(call: ast.Call, owner: str) -> Iterator[Finding]:
    accepted = libsource.config_fields(owner) if owner in drift.CONFIGS else libsource.init_keywords(owner)
    for kw in call.keywords:
        if kw.arg is None:
            continue
        change = drift.keyword_change(owner, kw.arg)
        if change is not None:
            yield Finding(kw.value.lineno, f"{owner}({kw.arg}=...): {change.fix()}")
        elif accepted is not None and not accepted.accepts(kw.arg):
            yield Finding(
                kw.value.lineno,
                f"{owner}({kw.arg}=...): the installed {owner} takes no such "
                f"argument{did_you_mean(kw.arg, accepted.names)}",
            )


def config_values(call: ast.Call, where: Where) -> Iterator[Finding]:
    for kw in call.keywords:
        values = constant_strings(kw.value)
        if kw.arg == "optim" and values:
            yield from optimizer(values[0], kw.value.lineno, where, f"optim={values[0]!r}")
        elif kw.arg == "report_to":
            yield from integrations(values, kw.value.lineno, "report_to")
        elif kw.arg == "bf16" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
            yield from bf16(kw.value.lineno, where, "bf16=True")


def dataset_paths(call: ast.Call, where: Where) -> Iterator[Finding]:
    for kw in call.keywords:
        if kw.arg == "data_files":
            for value in constant_strings(kw.value, mappings=True):
                if missing(value, where, glob=True):
                    yield Finding(kw.value.lineno, f"load_dataset(data_files={value!r}): no such file here")
    if call.args:
        for value in constant_strings(call.args[0]):
            if looks_local(value) and missing(value, where):
                yield Finding(call.lineno, f"load_dataset({value!r}): no such file or folder here")


def constant_strings(node: ast.expr, mappings: bool = False) -> list[str]:
    """The string constants of a value: "x", ["x", "y"], and with ``mappings`` {"train": "x"}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [s for e in node.elts for s in constant_strings(e)]
    if mappings and isinstance(node, ast.Dict):
        return [s for v in node.values for s in constant_strings(v, mappings)]
    return []


# ---------------------------------------------------------------- the recipe's arguments


def recipe_arguments(recipe: Recipe, args: Sequence[str], where: Where) -> Iterator[Finding]:
    """Arguments the recipe's parser would refuse, and values that cannot work here."""
    parser = find_parser(recipe)
    given = parse_flags(args)
    line = parser[0] if parser else 1
    if parser is not None and parser[1] is not None:
        accepted, owners = parser[1]
        for name in given:
            if name.replace("-", "_").removeprefix("no_") in accepted or name.replace("-", "_") in accepted:
                continue
            change = next(filter(None, (drift.keyword_change(o, name) for o in owners)), None)
            if change is not None:
                yield Finding(line, f"recipe argument --{name}: {change.flag_fix()}")
                continue
            known = f"not an argument of {', '.join(owners)}{did_you_mean(name, accepted, '--')}"
            yield Finding(line, f"recipe argument --{name}: {known}")
    for name, values in given.items():
        label = f"--{name} {' '.join(values)}".rstrip()
        if name == "optim" and values:
            yield from optimizer(values[0], line, where, label)
        elif name == "report_to":
            yield from integrations(values, line, label)
        elif name == "bf16" and values[:1] in ([], ["true"], ["True"]):
            yield from bf16(line, where, label)
        elif name in ("model_name_or_path", "dataset_name") and values:
            local = looks_local(values[0]) or (name == "dataset_name" and values[0].endswith(DATA_SUFFIXES))
            if local and missing(values[0], where):
                yield Finding(line, f"{label}: no such file or folder here (a path, not a hub id)")


def find_parser(recipe: Recipe) -> tuple[int, tuple[frozenset[str], list[str]] | None] | None:
    """The line of the recipe's TrlParser / HfArgumentParser and the argument names its dataclasses
    accept; (line, None) when they cannot all be read (then nothing is checked)."""
    for node in ast.walk(recipe.tree):
        if not isinstance(node, ast.Call):
            continue
        target = recipe.resolve(node.func)
        if target is None or target[1] not in PARSERS:
            continue
        types = (
            node.args[0]
            if node.args
            else next((k.value for k in node.keywords if k.arg == "dataclass_types"), None)
        )
        elements = types.elts if isinstance(types, (ast.Tuple, ast.List)) else [types] if types else []
        accepted: set[str] = {"config", "help", "h"}
        owners: list[str] = []
        for element in elements:
            fields = dataclass_names(recipe, element)
            if fields is None:
                return node.lineno, None
            accepted |= fields
            owners.append(ast.unparse(element))
        return node.lineno, (frozenset(accepted), owners)
    return None


def dataclass_names(recipe: Recipe, node: ast.expr) -> frozenset[str] | None:
    if isinstance(node, ast.Name) and node.id in recipe.dataclasses:
        local = recipe.dataclasses[node.id]

        def lookup(base: str) -> libsource.Signature | None:
            if base in recipe.dataclasses:
                names = dataclass_names(recipe, ast.Name(base))
                return libsource.Signature(names) if names is not None else None
            resolved = recipe.names.get(base)
            return libsource.config_fields(resolved[1]) if resolved else None

        signature = libsource.dataclass_fields(local, lookup)
        return signature.names if signature else None
    target = recipe.resolve(node)
    signature = libsource.config_fields(target[1]) if target and target[0].split(".")[0] in WATCHED else None
    return signature.names if signature else None


# ---------------------------------------------------------------- values that cannot work here


def optimizer(name: str, line: int, where: Where, label: str) -> Iterator[Finding]:
    if where.offload_optimizer and name in SLOW_CPU_OPTIMIZERS:
        yield Finding(
            line,
            f"{label} with optimizer offload: the step runs on the CPU, where this one measured "
            f"about 3x slower than {FAST_CPU_OPTIMIZER} (bench/offload_step.py); kept as the recipe "
            "asks (drop it to get the fast one)",
            note=True,
        )
    if where.on_cpu and any(mark in name.lower() for mark in CUDA_OPTIMIZER_MARKS):
        yield Finding(
            line,
            f"{label}: this optimizer needs CUDA (bitsandbytes/apex), but the launch runs on "
            "CPU processes (--procs); use adamw_torch_fused or adamw_torch there",
        )


def integrations(names: Sequence[str], line: int, label: str) -> Iterator[Finding]:
    for name in names:
        for piece in name.split(","):
            needed = INTEGRATIONS.get(piece.strip())
            if needed and not any(installed(d) for d in needed):
                yield Finding(
                    line,
                    f"{label}: {piece.strip()} is not installed here (pip install {needed[0]}), "
                    "so the trainer would crash after the model loads; or report to none",
                )


def installed(distribution: str) -> bool:
    import importlib.metadata  # ~15 ms: only when a recipe names an integration

    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def bf16(line: int, where: Where, label: str) -> Iterator[Finding]:
    if where.on_cpu or not where.capabilities:
        return
    old = sorted({c for c in where.capabilities if c is not None and c < 8.0})
    if old:
        yield Finding(
            line,
            f"{label}: these GPUs (compute capability {', '.join(map(str, old))}) have no "
            "bf16; use --precision fp16 (or fp16=True in the recipe)",
        )


def looks_local(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) and "://" not in value


def missing(value: str, where: Where, glob: bool = False) -> bool:
    if "://" in value or not (looks_local(value) or os.sep in value or value.endswith(DATA_SUFFIXES)):
        return False  # a hub id or a URL: not ours to judge offline
    path = Path(os.path.expanduser(value))
    path = path if path.is_absolute() else where.cwd / path
    if glob and any(ch in value for ch in "*?["):
        return not any(path.parent.glob(path.name))
    return not path.exists()


def did_you_mean(name: str, choices: frozenset[str] | set[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name.replace("-", "_"), sorted(choices), n=1, cutoff=0.75)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def findings(recipe: str, args: Sequence[str], where: Where) -> tuple[list[str], list[str]]:
    """(problems, notes) as a launch shows them: ``recipe.py:LINE: what, and the fix``. Problems
    refuse the launch; notes are said and the launch goes ahead."""
    found = check(Path(recipe), args, where)
    problems = [f"{recipe}:{f.line}: {f.message}" for f in found if not f.note]
    return problems, [f"{recipe}:{f.line}: {f.message}" for f in found if f.note]


def where_for(on_cpu: bool, slurm: bool, offload_optimizer: bool = False) -> Where:
    """Where a launch goes: this machine's GPUs for a local one; a SLURM node's are unknown here."""
    if slurm or on_cpu:
        return Where(on_cpu, None, Path.cwd(), offload_optimizer)
    from launcher.machine.hardware import probe

    return Where(on_cpu, probe().compute_capabilities, Path.cwd(), offload_optimizer)
