"""Which nodes a requeued SLURM job leaves out: a node the attempts' faults happened on twice (a
hung or killed rank there, or the node lost) is likely to fail again, so the job asks SLURM not to
place it there (``--exclude``), as long as the partition keeps enough other nodes to run it. Pure:
``backends/slurm_jobs.py`` reads the partition and applies it."""

from __future__ import annotations

from collections.abc import Mapping, Set

FAULTS_TO_EXCLUDE = 2


def to_exclude(
    faulty: Mapping[str, int], excluded: Set[str], usable: Set[str], needed: int
) -> tuple[list[str], str]:
    """The hosts to add to the job's exclusions, and, when one should go but cannot, why not.
    ``faulty``: faults per host; ``excluded``: already left out; ``usable``: the partition's nodes
    that can run jobs; ``needed``: the job's node count."""
    due = sorted(h for h, count in faulty.items() if count >= FAULTS_TO_EXCLUDE and h not in excluded)
    if not due:
        return [], ""
    left = usable - excluded - set(due)
    if len(left) < needed:
        names = ", ".join(due)
        return [], (
            f"not excluding {names} (faults there in {FAULTS_TO_EXCLUDE}+ attempts): the partition would "
            f"keep {len(left)} usable node(s) for a {needed}-node job"
        )
    return due, ""
