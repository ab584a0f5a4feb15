"""Pure renderers: a validated spec in, plain dicts out. No file I/O happens here.

The accelerate YAML holds only the process layout and points at the DeepSpeed file; batch,
accumulation, clipping, precision and ZeRO settings live in the DeepSpeed JSON and in the trainer
overrides, with identical typed values. A value the launch left to the recipe is ``"auto"`` in the
DeepSpeed JSON, which transformers fills from the recipe's trainer arguments.

Renderers read the decided spec (``spec/decided.py``, below them) and nothing above: the rules
(``rules/``, above) check a user's DeepSpeed settings against what the spec renders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from launcher.render.accelerate import render_accelerate
from launcher.render.deepspeed import render_deepspeed
from launcher.render.env import render_env
from launcher.render.trainer import render_trainer_overrides

if TYPE_CHECKING:
    from launcher.spec.decided import Resolved


ACCELERATE_FILE = "accelerate.yaml"


DEEPSPEED_FILE = "ds_config.json"


TRAINER_FILE = "trainer_overrides.json"


DECIDED_FILE = "decided.json"


ENV_FILE = "env.json"


@dataclass(frozen=True)
class Rendered:
    accelerate: dict[str, Any]
    deepspeed: dict[str, Any] | None
    trainer: dict[str, Any]
    env: dict[str, str]
    decided: dict[str, Any]


def render_all(resolved: Resolved, deepspeed_path: str = DEEPSPEED_FILE) -> Rendered:
    """The three renderings of one spec; ``deepspeed_path`` is where the YAML will find the JSON."""
    deepspeed = render_deepspeed(resolved) if resolved.uses_deepspeed else None
    return Rendered(
        accelerate=render_accelerate(resolved, deepspeed_path),
        deepspeed=deepspeed,
        trainer=render_trainer_overrides(resolved),
        env=render_env(resolved),
        decided=resolved.to_dict(),
    )


def yaml_text(data: dict[str, Any]) -> str:
    import yaml  # loaded by the launcher when it writes the files, not by every rank that reads names here

    return yaml.safe_dump(data, sort_keys=False)


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def texts(rendered: Rendered) -> dict[str, str]:
    """The three configs a user reads or reuses: file name -> text, in the order a reader wants them."""
    out = {ACCELERATE_FILE: yaml_text(rendered.accelerate)}
    if rendered.deepspeed is not None:
        out[DEEPSPEED_FILE] = json_text(rendered.deepspeed)
    out[TRAINER_FILE] = json_text(rendered.trainer)
    return out


def attempt_texts(rendered: Rendered) -> dict[str, str]:
    """Every rendered file of one attempt: the configs, the launch's own environment and the decided
    values the ranks read (``decided.json``), so no rank decides anything again."""
    return {
        DECIDED_FILE: json_text(rendered.decided),
        **texts(rendered),
        ENV_FILE: json_text(rendered.env),
    }


__all__ = [
    "ACCELERATE_FILE",
    "DECIDED_FILE",
    "DEEPSPEED_FILE",
    "ENV_FILE",
    "TRAINER_FILE",
    "Rendered",
    "attempt_texts",
    "render_accelerate",
    "render_all",
    "render_deepspeed",
    "render_env",
    "render_trainer_overrides",
    "texts",
]
