"""The pre-flight barrier on loopback: nodes that reach the head pass, a missing one is named."""

from __future__ import annotations

import socket
import threading

import pytest

from launcher.run.rendezvous import PreflightError, barrier


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_node_joins_and_is_released() -> None:
    hosts, port = ["n1", "n2", "n3"], free_port()
    errors: list[BaseException] = []

    def node(rank: int) -> None:
        try:
            barrier(rank, hosts, "127.0.0.1", port, timeout=20)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=node, args=(r,)) for r in (1, 2, 0)]  # workers before the head
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and not any(t.is_alive() for t in threads)


def test_a_node_that_cannot_reach_the_head_names_itself_and_the_address() -> None:
    with pytest.raises(
        PreflightError, match=r"n2 \(node 1\) could not reach the head at no-such-head.invalid:"
    ):
        barrier(1, ["n1", "n2"], "no-such-head.invalid", free_port(), timeout=1)


def test_the_head_names_the_nodes_that_never_came() -> None:
    with pytest.raises(PreflightError, match=r"waited 1 s .* n2 \(node 1\), n3 \(node 2\)"):
        barrier(0, ["n1", "n2", "n3"], "127.0.0.1", free_port(), timeout=1)


def test_a_single_node_needs_no_barrier() -> None:
    barrier(0, ["n1"], "nowhere.invalid", 1, timeout=0.1)
