"""The renames table held against the installed libraries, and the source reader against the imported
classes: when an upgrade brings an old name back, drops a replacement or moves a class, this fails."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from launcher.machine import drift, libsource

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")


def installed_class(name: str) -> type:
    for module in ("transformers", "trl"):
        found = getattr(importlib.import_module(module), name, None)
        if isinstance(found, type):
            return found
    raise AssertionError(f"{name} is in neither transformers nor trl")


def keywords_of(name: str) -> set[str]:
    cls = installed_class(name)
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def owners(entry: drift.Keyword) -> list[str]:
    """The classes an entry speaks for that this installation has."""
    names = drift.CONFIGS if entry.owner == "TrainingArguments" else (entry.owner,)
    return [n for n in names if hasattr(transformers, n) or hasattr(trl, n)]


@pytest.mark.parametrize("entry", drift.KEYWORDS, ids=lambda e: f"{e.owner}.{e.old}")
def test_old_keyword_is_gone_and_its_replacement_exists(entry: drift.Keyword) -> None:
    for owner in owners(entry):
        assert entry.old not in keywords_of(owner), f"{owner}({entry.old}=) works again: drop the entry"
    if entry.new is not None:
        target = entry.new_owner or entry.owner
        assert entry.new in keywords_of(target), f"{target}({entry.new}=) does not exist"


@pytest.mark.parametrize("entry", drift.NAMES, ids=lambda e: f"{e.module}.{e.old}")
def test_old_name_is_gone_and_its_replacement_imports(entry: drift.Name) -> None:
    module = importlib.import_module(entry.module)
    assert not hasattr(module, entry.old), f"{entry.module}.{entry.old} exists again: drop the entry"
    if entry.new is not None:
        where, name = entry.new.split(":")
        assert hasattr(importlib.import_module(where), name), f"{entry.new} does not exist"


@pytest.mark.parametrize("name", sorted(set(drift.CONFIGS) | {"ModelConfig", "ScriptArguments"}))
def test_fields_read_from_source_are_the_imported_dataclass_fields(name: str) -> None:
    if not (hasattr(transformers, name) or hasattr(trl, name)):
        pytest.skip(f"{name} is not in this installation")
    read = libsource.config_fields(name)
    assert read is not None and not read.open
    assert read.names == keywords_of(name)


@pytest.mark.parametrize("name", drift.TRAINERS)
def test_init_keywords_read_from_source_are_the_imported_signature(name: str) -> None:
    if not (hasattr(transformers, name) or hasattr(trl, name)):
        pytest.skip(f"{name} is not in this installation")
    read = libsource.init_keywords(name)
    cls = installed_class(name)
    parameters = inspect.signature(cls.__init__).parameters.values()
    assert read is not None
    assert read.names == keywords_of(name) - {p.name for p in parameters if p.kind is p.VAR_KEYWORD}
    assert read.open == any(p.kind is p.VAR_KEYWORD for p in parameters)
