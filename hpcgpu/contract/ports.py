"""Ports and the files through which nodes agree on one: torch-free, no shell.

On one node the OS picks the rendezvous port (c10d on 127.0.0.1:0) and nothing here is needed.
Across nodes the head node picks a free port *before* the ranks start and publishes `host:port`
in the run directory, which every node reads (a hash of the job id could collide).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def free_port(host: str) -> int:
    """A TCP port that is free on host now (bind port 0; the OS picks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            # Node names that resolve to an address this host does not own: any interface will do.
            sock.bind(("", 0))
        return sock.getsockname()[1]


def publish_endpoint(path: Path, endpoint: str) -> None:
    """Write endpoint to path atomically (tmp + rename), so readers never see half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    tmp.write_text(endpoint + "\n")
    os.replace(tmp, path)


def wait_file(path: Path, timeout_s: float) -> str | None:
    """The stripped text of path once it exists and is not empty; None after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text:
            return text
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)
