"""Pre-flight across a SLURM allocation: every node reaches the head before anything heavy starts.

A node that cannot reach the head (wrong address, firewall, another interface) otherwise hangs in
torchrun's rendezvous for up to 15 minutes and then fails with no hint of which node it was. Here
each node's task connects to a plain TCP barrier on the head (the port after torchrun's) within a
short timeout, and whichever side gives up names the node and the address that was tried.

The barrier's connections stay open afterwards: they are the nodes' link (``run/nodelink.py``),
over which a node that dies or ends badly is noticed by the others in seconds.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Sequence

DEFAULT_TIMEOUT = 60.0


class PreflightError(RuntimeError):
    """The allocation's nodes could not all reach each other; the message says who and where."""


def barrier(
    node_rank: int, hosts: Sequence[str], head: str, port: int, timeout: float
) -> dict[int, socket.socket]:
    """Return once every node of ``hosts`` has joined at ``head:port``, with the open connections
    (the head: one per other node; any other node: the head's, as node 0); raise ``PreflightError``."""
    if len(hosts) <= 1:
        return {}
    if node_rank == 0:
        return _serve(hosts, port, timeout)
    return {0: _join(node_rank, hosts, head, port, timeout)}


def _serve(hosts: Sequence[str], port: int, timeout: float) -> dict[int, socket.socket]:
    deadline = time.monotonic() + timeout
    joined: dict[int, socket.socket] = {}
    with socket.create_server(("", port), reuse_port=False, backlog=len(hosts)) as server:
        try:
            while len(joined) < len(hosts) - 1:
                server.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    missing = [f"{h} (node {r})" for r, h in enumerate(hosts) if r and r not in joined]
                    raise PreflightError(
                        f"pre-flight: the head {hosts[0]} waited {timeout:.0f} s at port {port} for "
                        f"{', '.join(missing)}; they could not reach it (their logs name the address tried)"
                    ) from None
                conn.settimeout(5)
                with contextlib.suppress(OSError, ValueError):
                    joined[int(conn.recv(64).decode().split()[0])] = conn
            for conn in joined.values():
                conn.sendall(b"ok\n")
                conn.settimeout(None)
            return joined
        except BaseException:
            for conn in joined.values():
                conn.close()
            raise


def _join(node_rank: int, hosts: Sequence[str], head: str, port: int, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    me = f"{hosts[node_rank]} (node {node_rank})"
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            conn = socket.create_connection((head, port), timeout=max(0.1, deadline - time.monotonic()))
            try:
                conn.sendall(f"{node_rank} {hosts[node_rank]}\n".encode())
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                if conn.recv(3).startswith(b"ok"):
                    conn.settimeout(None)
                    return conn
                last_error = "the head closed the connection (another node did not join)"
            except BaseException:
                conn.close()
                raise
            conn.close()
        except OSError as err:
            last_error = str(err) or type(err).__name__
        time.sleep(0.5)
    raise PreflightError(
        f"pre-flight: {me} could not reach the head at {head}:{port} within {timeout:.0f} s ({last_error}); "
        f"check that {head} resolves and is reachable from {hosts[node_rank]}, or set FTLAUNCH_HEAD_ADDR "
        "to an address of the first node that the others can reach"
    )
