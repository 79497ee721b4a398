"""Which processes hold a file open: the daemon-start scripts (slurm/cluster.sh, containers/
docker-engine.sh) take a flock while they start daemons, and a daemon that inherited that fd would
hold the lock for its whole life, so every later `up` (and every test waiting on the lock) waits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def lock_holders(lock: str | os.PathLike[str], is_daemon: Callable[[str], bool]) -> list[str]:
    """'comm (pid N)' of each process whose command name passes is_daemon and has `lock` open."""
    lock, holders = str(lock), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if is_daemon(comm) and any(os.readlink(fd) == lock for fd in (proc / "fd").iterdir()):
                holders.append(f"{comm} (pid {proc.name})")
        except OSError:
            continue  # exited while we looked
    return holders
