"""The nodes' link on loopback: a peer that dies, goes silent or ends badly is reported once and
quickly; a peer that finished or saved for a pre-emption is not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from launcher.run import nodelink
from launcher.run.nodelink import Link, PeerEnd
from launcher.run.rendezvous import barrier

from .test_rendezvous import free_port

HOSTS = ["n1", "n2", "n3"]


def linked() -> list[Link]:
    """Three nodes that passed the pre-flight barrier, each with its link."""
    port, peers = free_port(), {}

    def join(rank: int) -> None:
        peers[rank] = barrier(rank, HOSTS, "127.0.0.1", port, timeout=20)

    threads = [threading.Thread(target=join, args=(r,)) for r in (1, 2, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return [Link(rank, HOSTS, peers[rank]) for rank in range(3)]


def heard(link: Link) -> tuple[list[PeerEnd], threading.Event]:
    ends: list[PeerEnd] = []
    called = threading.Event()

    def on_end(end: PeerEnd) -> None:
        ends.append(end)
        called.set()

    link.watch(on_end)
    return ends, called


def test_a_peer_that_ends_badly_is_reported_with_its_words() -> None:
    head, one, two = linked()
    ends, called = heard(head)
    heard(one)
    two.end("hung", "hung: rank 2 (node 2) made no progress for 30 s at step 15 (training)")
    assert called.wait(5)
    (end,) = ends
    assert (end.node, end.host, end.state) == (2, "n3", "hung")
    said = "hung: rank 2 (node 2) made no progress for 30 s at step 15 (training)"
    assert end.describe() == f"node 2 (n3) ended the attempt: {said}"
    for link in (head, one):
        link.close()


def test_a_peer_killed_outright_is_noticed_within_two_seconds() -> None:
    """The kernel closes a killed process's sockets: the head reads the end of the stream."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", JOIN_AND_SLEEP, str(port)], stdout=subprocess.PIPE, text=True
    )
    peers = barrier(0, ["n1", "n2"], "127.0.0.1", port, timeout=30)
    head = Link(0, ["n1", "n2"], peers)
    ends, called = heard(head)
    time.sleep(1.5)
    assert not called.is_set(), "a live peer that beats is not reported"
    killed = time.monotonic()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert called.wait(5)
    assert time.monotonic() - killed < 2
    (end,) = ends
    assert (end.node, end.state) == (1, "lost") and "ended without a word" in end.describe()
    head.close()


JOIN_AND_SLEEP = """
import sys, time
from launcher.run.rendezvous import barrier
from launcher.run.nodelink import Link
link = Link(1, ["n1", "n2"], barrier(1, ["n1", "n2"], "127.0.0.1", int(sys.argv[1]), timeout=30))
link.watch(lambda end: None)
time.sleep(600)
"""


def test_a_silent_peer_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node cut off without a FIN: its socket stays open but says nothing."""
    monkeypatch.setattr(nodelink, "SILENT_SECONDS", 2.0)
    head, one, two = linked()
    ends, called = heard(head)
    heard(one)  # node 2 never beats
    assert called.wait(6)
    (end,) = ends
    assert (end.node, end.state) == (2, "lost") and "sent nothing for 2 s" in end.describe()
    for link in (head, one, two):
        link.close()


@pytest.mark.parametrize("state", ["finished", "preempted"])
def test_a_peer_that_ended_calmly_is_not_reported(state: str) -> None:
    head, one, two = linked()
    ends, _ = heard(head)
    one.end(state, "saved")
    two.end(state, "saved")
    time.sleep(2.5)
    assert ends == []
    head.close()


def test_a_single_node_link_does_nothing() -> None:
    link = Link(0, ["n1"], {})
    link.watch(lambda end: pytest.fail("no peer to end"))
    link.end("failed", "alone")
    assert link.ended is None and not link.head_lost()


def test_after_a_peers_notice_this_node_still_tells_it_how_it_ended() -> None:
    """A node that found a hang tells the others at once and keeps listening: the head that ends
    because of it must not read as lost to it (then that node would record the attempt)."""
    head, one, two = linked()
    heard(head)
    heard(one)
    ends_two, called_two = heard(two)
    two.tell("hung", "hung: rank 2 (node 2) made no progress")
    time.sleep(1.5)
    head.end("hung", "node 2 (n3) ended the attempt: hung")
    assert called_two.wait(5)
    (end,) = ends_two
    assert (end.node, end.state) == (0, "hung") and not two.head_lost()
    for link in (one, two):
        link.close()
