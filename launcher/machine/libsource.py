"""The installed libraries' configuration classes, read from their source instead of imported.

The pre-flight check needs the fields of ``TrainingArguments``, ``SFTConfig``, ... and the keywords
of the trainers' ``__init__`` on the ``--dry-run`` path, where importing trl (and so torch) would
cost seconds. Their source files are plain Python: a dataclass's fields are its annotated names,
its bases' included. ``tests/test_preflight.py`` holds what this reads against the imported classes.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

# Where each class lives (package, file below it). Looked up there first; else the package is
# searched, so a class that moved between releases is still found.
KNOWN_FILES = {
    "TrainingArguments": ("transformers", "training_args.py"),
    "Seq2SeqTrainingArguments": ("transformers", "training_args_seq2seq.py"),
    "Trainer": ("transformers", "trainer.py"),
    "SFTConfig": ("trl", "trainer/sft_config.py"),
    "DPOConfig": ("trl", "trainer/dpo_config.py"),
    "GRPOConfig": ("trl", "trainer/grpo_config.py"),
    "RewardConfig": ("trl", "trainer/reward_config.py"),
    "KTOConfig": ("trl", "trainer/kto_config.py"),
    "ModelConfig": ("trl", "trainer/model_config.py"),
    "ScriptArguments": ("trl", "scripts/utils.py"),
    "SFTTrainer": ("trl", "trainer/sft_trainer.py"),
    "DPOTrainer": ("trl", "trainer/dpo_trainer.py"),
    "GRPOTrainer": ("trl", "trainer/grpo_trainer.py"),
    "RewardTrainer": ("trl", "trainer/reward_trainer.py"),
    "KTOTrainer": ("trl", "trainer/kto_trainer.py"),
}


SEARCHED = ("trl",)  # packages small enough to search for a class that moved


@dataclass(frozen=True)
class Signature:
    """What a class accepts: its names, and whether it takes any keyword at all (``**kwargs``)."""

    names: frozenset[str]
    open: bool = False

    def accepts(self, keyword: str) -> bool:
        return self.open or keyword in self.names


def package_dir(package: str) -> Path | None:
    """The installed package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=64)
def parsed(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def find_class(name: str) -> ast.ClassDef | None:
    """The installed definition of ``name``: at its known place, else searched for."""
    package, relative = KNOWN_FILES.get(name, ("", ""))
    root = package_dir(package) if package else None
    found = _class_in(root / relative, name) if root else None
    for searched in SEARCHED if found is None else ():
        base = package_dir(searched)
        for path in sorted(base.rglob("*.py")) if base else ():
            found = _class_in(path, name) if _defines(path, name) else None
            if found is not None:
                return found
    return found


def _class_in(path: Path, name: str) -> ast.ClassDef | None:
    tree = parsed(path) if path.is_file() else None
    for node in tree.body if tree else ():
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    return None


def _defines(path: Path, name: str) -> bool:
    try:
        return re.search(rf"^class {name}\b", path.read_text(encoding="utf-8"), re.MULTILINE) is not None
    except OSError:
        return False


@functools.lru_cache(maxsize=64)
def config_fields(name: str) -> Signature | None:
    """The fields of an installed dataclass, its bases' included; None when it cannot be read."""
    node = find_class(name)
    if node is None:
        return None
    return dataclass_fields(node, config_fields)


def dataclass_fields(node: ast.ClassDef, lookup: object) -> Signature | None:
    """Annotated names of ``node`` and of its bases (``lookup(base_name)`` reads a base elsewhere;
    a base that cannot be read makes the answer unknown, never a guess)."""
    names = {
        stmt.target.id
        for stmt in node.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and not _class_var(stmt)
    }
    for base in node.bases:
        base_name = (
            base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        )
        if base_name in (None, "object", "Generic"):
            continue
        inherited = lookup(base_name) if callable(lookup) else None
        if not isinstance(inherited, Signature):
            return None
        names |= inherited.names
    return Signature(frozenset(names))


def _class_var(stmt: ast.AnnAssign) -> bool:
    return "ClassVar" in ast.unparse(stmt.annotation)


@functools.lru_cache(maxsize=64)
def init_keywords(name: str) -> Signature | None:
    """The keywords an installed class's ``__init__`` takes (a trainer's)."""
    node = find_class(name)
    if node is None:
        return None
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "__init__":
            args = stmt.args
            names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]} - {"self"}
            return Signature(frozenset(names), open=args.kwarg is not None)
    return None
