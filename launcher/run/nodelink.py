"""The nodes' link: the pre-flight barrier's connections, kept open for the whole attempt.

Each node's supervisor beats once a second to its peers (the head to every node, every node to the
head) and says how it ended before it closes. A peer that closes without saying so (its task was
killed, its node went down: the kernel closes the socket), or that says nothing for
``SILENT_SECONDS`` (a node cut off without a FIN), or that ended badly (failed, hung), is reported
once to ``on_end``, which ends this node's process tree. That is how a lost node is noticed in
seconds, not at gloo's or NCCL's timeout. The head relays: ending after a peer's end, it tells
every other node in turn. A peer that finished, or saved and stopped for a pre-emption, is simply
no longer watched.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

BEAT_SECONDS = 1.0
SILENT_SECONDS = 10.0
CALM = {"finished", "preempted"}  # a peer that ended this way leaves the others to end by themselves


@dataclass(frozen=True)
class PeerEnd:
    """Why this node must end: which peer, how it ended (``lost`` when it could not say), and its words."""

    node: int
    host: str
    state: str
    message: str

    def describe(self) -> str:
        said = self.message if self.state == "lost" else f"ended the attempt: {self.message}"
        return f"node {self.node} ({self.host}) {said}"


class Link:
    """The open connections of one node to its peers (``rendezvous.barrier`` made them)."""

    def __init__(self, node_rank: int, hosts: Sequence[str], peers: Mapping[int, socket.socket]) -> None:
        self.node_rank, self.hosts = node_rank, list(hosts)
        self.join(peers)
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._heard_end = threading.Event()
        self.ended: PeerEnd | None = None  # the first peer that ended badly, once one did
        self.lost: PeerEnd | None = None  # a peer whose task is gone (or never came): only SLURM restarts it

    def join(self, peers: Mapping[int, socket.socket]) -> None:
        """Take the barrier's open connections."""
        self._peers = dict(peers)
        self._buffers = {node: b"" for node in self._peers}
        self._heard = {node: time.monotonic() for node in self._peers}  # the peers still listened to

    def head_lost(self) -> bool:
        """The head died without a word: then node 1 records the attempt and requeues the job."""
        return self.ended is not None and self.ended.node == 0 and self.ended.state == "lost"

    def wait_for_end(self, seconds: float) -> PeerEnd | None:
        """The peer that ended badly, waiting up to ``seconds`` for one to say so."""
        self._heard_end.wait(seconds if self._heard else 0)
        return self.ended

    def watch(self, on_end: Callable[[PeerEnd], None]) -> None:
        """Beat and listen in a thread; ``on_end`` is called once, for the first peer that ended badly."""
        if self._peers:
            threading.Thread(target=self._run, args=(on_end,), daemon=True).start()

    def tell(self, state: str, message: str) -> None:
        """Tell every peer that this node is ending (a hang found here), before it has ended."""
        self._send({"end": state, "message": message})

    def end(self, state: str, message: str) -> None:
        """Tell every peer how this node ended, then close the link."""
        self._stop.set()
        self._send({"end": state, "message": message})
        self.close()

    def close(self) -> None:
        self._stop.set()
        for conn in self._peers.values():
            with contextlib.suppress(OSError):
                conn.close()
        self._peers = {}

    def _run(self, on_end: Callable[[PeerEnd], None]) -> None:
        while not self._stop.is_set() and self._heard:
            self._send({"beat": time.time()})
            found = self._listen(BEAT_SECONDS)
            if found is not None and not self._stop.is_set():
                self.ended = found
                self._heard_end.set()
                on_end(found)
                return

    def _send(self, message: dict[str, object]) -> None:
        line = (json.dumps(message) + "\n").encode()
        with self._send_lock:
            for conn in list(self._peers.values()):
                with contextlib.suppress(OSError):
                    conn.sendall(line)

    def _listen(self, seconds: float) -> PeerEnd | None:
        """Read what the peers said for up to ``seconds``; the first peer that ended badly, if any."""
        conns = {conn: node for node, conn in self._peers.items() if node in self._heard}
        try:
            readable, _, _ = select.select(list(conns), [], [], seconds)
        except (OSError, ValueError):
            return None  # closed under us: the link is ending
        for conn in readable:
            node = conns[conn]
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data:
                return self._peer(
                    node,
                    "lost",
                    "is gone: its ftlaunch task ended without a word (killed, or the node was lost)",
                )
            self._heard[node] = time.monotonic()
            found = self._read_lines(node, data)
            if found is not None:
                return found
        now = time.monotonic()
        for node, heard in list(self._heard.items()):
            if now - heard > SILENT_SECONDS:
                return self._peer(
                    node, "lost", f"sent nothing for {SILENT_SECONDS:.0f} s (lost, or its network is down)"
                )
        return None

    def _read_lines(self, node: int, data: bytes) -> PeerEnd | None:
        *lines, self._buffers[node] = (self._buffers[node] + data).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                said = json.loads(line) if line.strip() else {}
                if "end" not in said:
                    continue
                state, message = str(said["end"]), str(said.get("message", ""))
                if state in CALM:
                    self._forget(node)
                    return None
                return self._peer(node, state, message)
        return None

    def _peer(self, node: int, state: str, message: str) -> PeerEnd:
        self._forget(node)
        end = PeerEnd(node, self.hosts[node] if node < len(self.hosts) else "?", state, message)
        if state == "lost":
            self.lost = self.lost or end
        return end

    def _forget(self, node: int) -> None:
        """No longer listened to; still told how this node ends (the socket closes with the link:
        closing it now would read as this node's loss on the other side)."""
        self._heard.pop(node, None)
