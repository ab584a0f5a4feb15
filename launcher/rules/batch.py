"""The batch arithmetic, in one place: ``global = micro x accumulation x world``, which two of the
three decide the third, and how a wrong global batch is corrected. The launch, the resume rules
and every rank (``rank/``) use these functions, so they cannot disagree."""

from __future__ import annotations

from launcher.spec.decided import BatchPlan


def product(micro: int, grad_accum: int, world: int) -> int:
    """Samples per optimizer step: the global batch."""
    return micro * grad_accum * world


def resolve_batch(
    micro: int | None, grad_accum: int | None, global_batch: int | None, world: int
) -> tuple[BatchPlan, list[str]]:
    """Any two of micro / accumulation / global give the third: ``global = micro x accum x world``.

    With fewer than two, the missing ones stay ``None`` and the recipe's values are adopted at run
    time (``rank/guard.py`` resolves them with this same function).
    """
    plan = BatchPlan(micro, grad_accum, global_batch, world)
    if world < 1 or any(v is not None and v < 1 for v in (micro, grad_accum, global_batch)):
        return plan, []  # reported by the topology / scalar rules
    if micro is not None and grad_accum is not None:
        total = product(micro, grad_accum, world)
        if global_batch is not None and global_batch != total:
            return plan, [
                f"--global-batch {global_batch} != --micro-batch {micro} x --grad-accum {grad_accum} "
                f"x world size {world} = {total}; give only two of the three"
            ]
        return BatchPlan(micro, grad_accum, total, world), []
    if global_batch is None:
        return plan, []
    known, known_flag = (micro, "--micro-batch") if micro is not None else (grad_accum, "--grad-accum")
    step = (known or 1) * world
    if global_batch % step:
        why = f"{known_flag} {known} x world size {world}" if known is not None else f"world size {world}"
        return plan, [
            f"--global-batch {global_batch} is not divisible by {why} = {step}; "
            f"nearest valid: {nearest_multiples(global_batch, step)}"
        ]
    if micro is not None:
        return BatchPlan(micro, global_batch // step, global_batch, world), []
    if grad_accum is not None:
        return BatchPlan(global_batch // step, grad_accum, global_batch, world), []
    return plan, []


def nearest_multiples(value: int, step: int) -> str:
    below = (value // step) * step
    choices = [c for c in (below, below + step) if c >= step]
    return " or ".join(f"--global-batch {c}" for c in choices)
