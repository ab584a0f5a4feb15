"""The decided launch: the batch plan, the resume point and the ``--zero auto`` choice, with the
spec they came from. ``decided.json`` holds a ``Resolved``; renderers, backends and every rank read
it, so nothing is decided twice. Data only: the rules that decide live in ``rules/``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from launcher.spec.launchspec import LaunchSpec, from_mapping, to_dict


@dataclass(frozen=True)
class BatchPlan:
    """The batch triad for one data-parallel world size; ``None`` means "the recipe's value"."""

    micro: int | None
    grad_accum: int | None
    global_batch: int | None
    world_size: int

    def describe(self) -> str:
        def show(v: int | None) -> str:
            return str(v) if v is not None else "(recipe)"

        return (
            f"micro {show(self.micro)} x accumulation {show(self.grad_accum)} x world {self.world_size}"
            f" = global {show(self.global_batch)}"
        )


@dataclass(frozen=True)
class Resume:
    """Where an attempt continues from, decided by the launcher (never by the ranks)."""

    checkpoint: str  # the complete checkpoint folder the trainer resumes from
    step: int
    universal: bool = False  # saved on another world size: load DeepSpeed's universal form
    saved_world_size: int | None = None
    saved_global_batch: int | None = None  # the run's global batch until now (None: not recorded)
    derived: tuple[str, ...] = ()  # batch values chosen to keep it ("micro", "grad_accum"): see ResumeBatch


@dataclass(frozen=True)
class Resolved:
    """A spec that passed every rule, with its derived numbers."""

    spec: LaunchSpec  # with the decided ZeRO stage and offload (never "auto")
    batch: BatchPlan
    resume: Resume | None = None
    zero_auto: ZeroAuto | None = None  # set when --zero auto decided the stage

    @property
    def world_size(self) -> int:
        return self.spec.topology.world_size

    @property
    def zero_stage(self) -> int:
        stage = self.spec.zero.stage
        assert isinstance(stage, int), "a Resolved spec holds the decided stage"
        return stage

    @property
    def uses_deepspeed(self) -> bool:
        return self.zero_stage > 0

    def to_dict(self) -> dict[str, Any]:
        """The decided values as JSON: what each rank reads instead of deciding again."""
        resume = dataclasses.asdict(self.resume) if self.resume else None
        out = {"spec": to_dict(self.spec), "batch": dataclasses.asdict(self.batch), "resume": resume}
        if self.zero_auto is not None:  # only then: records of stages given by hand stay as they were
            out["zero_auto"] = {**dataclasses.asdict(self.zero_auto), "reason": list(self.zero_auto.reason)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> Resolved:
        saved = data.get("resume")
        resume = Resume(**{**saved, "derived": tuple(saved.get("derived", ()))}) if saved else None
        auto = data.get("zero_auto")
        zero_auto = None
        if auto:  # only a --zero auto launch records it
            zero_auto = ZeroAuto(**{**auto, "reason": tuple(auto["reason"])})
        return cls(from_mapping(data["spec"], source), BatchPlan(**data["batch"]), resume, zero_auto)


@dataclass(frozen=True)
class ZeroAuto:
    """What ``--zero auto`` chose and why; recorded in ``decided.json``, printed by the dry run."""

    stage: int
    offload_optimizer: str
    offload_params: str
    estimate_bytes: int  # per GPU (per process on CPU)
    usable_bytes: int
    offload_ram_bytes: int  # per node
    reason: tuple[str, ...]
