"""Which node an attempt's fault happened on (read from the records the ranks and supervisors
write), and which nodes a requeued SLURM job then leaves out."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.records import rundir
from launcher.records.faultnode import fault_node
from launcher.records.restarts import faulty_hosts
from launcher.rules.exclusion import to_exclude

GLOO = "RuntimeError: [third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer"


def write(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_json(path, data)


def attempt(tmp_path: Path, ranks: dict[int, int], number: int = 1) -> Path:
    """An attempt folder whose ranks (rank -> node) all made a step."""
    folder = rundir.attempt_path(tmp_path, number)
    for rank, node in ranks.items():
        beat = {"rank": rank, "node": node, "pid": 1, "phase": "training", "step": 5, "time": 1.0}
        write(folder / rundir.HEARTBEATS / f"rank{rank}.json", beat)
    return folder


def raised(folder: Path, rank: int, error: str) -> None:
    write(folder / rundir.FAILURES / f"rank{rank}.json", {"rank": rank, "step": 5, "error": error})


def test_a_rank_killed_on_node_1_is_node_1s_fault_while_its_peers_raise_the_collective_error(
    tmp_path: Path,
) -> None:
    folder = attempt(tmp_path, {0: 0, 1: 0, 2: 1, 3: 1})
    for rank in (0, 1, 3):
        raised(folder, rank, GLOO)
    assert fault_node(folder, 4) == 1


def test_the_recipes_own_error_is_no_nodes_fault(tmp_path: Path) -> None:
    folder = attempt(tmp_path, {0: 0, 1: 1})
    raised(folder, 0, "ValueError: a bug in the recipe at step 5")  # rank 1 was ended by torchrun
    assert fault_node(folder, 2) is None


def test_a_node_that_ended_its_own_ranks_for_another_is_not_blamed(tmp_path: Path) -> None:
    folder = attempt(tmp_path, {0: 0, 1: 1})  # node 1 lost: no record of it; node 0 cut short
    write(folder / rundir.NODES / "node0.json", {"node_rank": 0, "cut_short": True})
    assert fault_node(folder, 2) == 1
    write(folder / rundir.NODES / "node1.json", {"node_rank": 1, "cut_short": True})
    assert fault_node(folder, 2) is None, "both cut short: nothing singles a node out"


def test_a_hang_names_the_node_of_the_first_hang_found(tmp_path: Path) -> None:
    folder = attempt(tmp_path, {0: 0, 1: 1})
    write(folder / rundir.HANGS / "node0.json", {"node": 0, "detected": 20.0})
    write(folder / rundir.HANGS / "node1.json", {"node": 1, "detected": 10.0})
    assert fault_node(folder, 2) == 1


def test_finished_ranks_point_at_no_node(tmp_path: Path) -> None:
    folder = attempt(tmp_path, {0: 0, 1: 1})
    for rank in (0, 1):
        write(folder / rundir.DONE / f"rank{rank}.json", {"rank": rank})
    assert fault_node(folder, 2) is None


def test_faults_are_counted_per_host_over_the_runs_attempts(tmp_path: Path) -> None:
    for number, host in enumerate(["n1", None, "n1", "n2"], 1):
        folder = rundir.attempt_path(tmp_path, number)
        folder.mkdir(parents=True)
        write(folder / rundir.STATUS, {"state": "failed"} | ({"fault_host": host} if host else {}))
    assert faulty_hosts(tmp_path, 4) == {"n1": 2, "n2": 1}
    assert faulty_hosts(tmp_path, 2) == {"n1": 1}


@pytest.mark.parametrize(
    ("faulty", "excluded", "usable", "needed", "expected"),
    [
        ({"n1": 2, "n2": 1}, set(), {"n1", "n2"}, 1, ["n1"]),
        ({"n1": 1}, set(), {"n1", "n2"}, 1, []),
        ({"n1": 3}, {"n1"}, {"n1", "n2"}, 1, []),  # already left out
        ({"n1": 2, "n3": 2}, {"n2"}, {"n1", "n2", "n3", "n4", "n5"}, 2, ["n1", "n3"]),
    ],
)
def test_a_node_with_two_faults_is_excluded_while_the_partition_keeps_enough_nodes(
    faulty: dict[str, int], excluded: set[str], usable: set[str], needed: int, expected: list[str]
) -> None:
    assert to_exclude(faulty, excluded, usable, needed) == (expected, "")


def test_a_node_is_not_excluded_when_the_job_could_then_never_run() -> None:
    hosts, why_not = to_exclude({"n2": 2}, set(), {"n1", "n2"}, 2)
    assert hosts == []
    assert why_not == (
        "not excluding n2 (faults there in 2+ attempts): the partition would keep 1 usable node(s) "
        "for a 2-node job"
    )
