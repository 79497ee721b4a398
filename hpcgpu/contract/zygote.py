"""The wire between the node agent (agent/zygote.py) and the preloaded process it forks ranks from
(worker/zygote.py): one JSON object per SOCK_SEQPACKET message, descriptors passed alongside.

The agent sends {"env": {...}, "fds": [...]} with the rank's stdout and/or stderr as passed
descriptors ("fds" names them, in order); the preloaded process answers {"pid": P} once the new rank
said it is set up and leads its own session (so the agent can signal its process group), or {"error":
"..."} when it could not fork it or the rank failed to set up; it sends {"exit": P, "code": C} when
rank P ends (C as Popen.returncode).
"""

from __future__ import annotations

import json
import socket

#: the largest message (a rank's environment)
MAX_MESSAGE = 1 << 20


def send(sock: socket.socket, message: dict, fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message and the descriptors passed with it; (None, []) when the other side closed."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, max_fds) if max_fds else (sock.recv(MAX_MESSAGE), [], 0, None)
    return (json.loads(data) if data else None), list(fds)
