"""Rank progress heartbeats: a few bytes per rank in a memory-mapped file the node agent reads.

A rank's heartbeat is a counter it bumps at every phase of its work (data, forward, backward,
optimizer, collective, checkpoint, user code), with the step and the phase beside it: two stores
into shared memory, no system call, no collective (benchmarks: Trainer steps/s with the watchdog on
and off). The node agent reads every rank's slot each poll; a counter that stops moving is a rank
that stopped making progress (hpcgpu/agent/watchdog.py). The same file carries the agent's request
for a hang report: the ranks' watcher threads see the request number change, write their stacks and
flight-recorder record, and echo the number back.

The counters are comparable across ranks: every rank of a run goes through the same phases in the
same order, so the rank with the lowest counter is the one behind.

Layout (little endian): a 16-byte header (magic, slot count, report request), then one 32-byte slot
per local rank: beats u64, step i64, phase u32, answered request u32, pid u32, 4 spare bytes.
Standard library only: the agent and the ranks both import it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MAGIC = b"HPCGHB01"
_HEADER = struct.Struct("<8sII")  # magic, slots, report request
_SLOT = struct.Struct("<QqIII4x")  # beats, step, phase, answered request, pid
_BEAT = struct.Struct("<qI")  # step, phase: written before the counter that announces them
_COUNT = struct.Struct("<Q")
_ANSWER = struct.Struct("<I")

#: what a rank is doing, by number (the slot holds the number; reports say the name)
PHASES = ("start", "data", "forward", "backward", "optimizer", "collective", "checkpoint", "eval", "user")
PHASE = {name: number for number, name in enumerate(PHASES)}
#: phases in which a rank legitimately goes long without a beat while it works (a large checkpoint
#: written, a first batch built): the watchdog counts its CPU time and I/O as progress there
BUSY_PHASES = frozenset({"start", "checkpoint"})


@dataclass(frozen=True)
class Slot:
    """One rank's heartbeat as the agent read it."""

    beats: int
    step: int
    phase: str
    answered: int
    pid: int


def size_for(slots: int) -> int:
    return _HEADER.size + slots * _SLOT.size


def _offset(local_rank: int) -> int:
    return _HEADER.size + local_rank * _SLOT.size


class HeartbeatFile:
    """The agent's side: creates the file for this node's ranks, reads their slots, asks for reports."""

    def __init__(self, path: Path, slots: int):
        self.path, self.slots = Path(path), slots
        # The agent holds an exclusive lock on the file while it lives: a file whose lock another
        # process can take is stale (remove_stale). A pid in the name would not tell: a node agent
        # in a container (docker --ipc=host shares /dev/shm) sees other pids than the host's.
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(self._fd, size_for(slots))
        self._mm = mmap.mmap(self._fd, size_for(slots))
        _HEADER.pack_into(self._mm, 0, MAGIC, slots, 0)

    def read(self) -> list[Slot]:
        out = []
        for local in range(self.slots):
            beats, step, phase, answered, pid = _SLOT.unpack_from(self._mm, _offset(local))
            out.append(Slot(beats, step, PHASES[phase] if phase < len(PHASES) else "?", answered, pid))
        return out

    def request_report(self) -> int:
        """Ask every rank for its stacks and collective record; returns the request's number."""
        _, slots, request = _HEADER.unpack_from(self._mm, 0)
        _HEADER.pack_into(self._mm, 0, MAGIC, slots, request + 1)
        return request + 1

    def close(self) -> None:
        self._mm.close()
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # releases the lock


def remove_stale(directory: Path) -> list[Path]:
    """Delete the heartbeat files of node agents that are gone (killed: they could not clean up).
    A file is stale when its lock can be taken; it is removed while holding the lock."""
    removed = []
    for path in Path(directory).glob("hpcgpu-*.hb"):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # an agent holds it: alive
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


class RankHeartbeat:
    """A rank's side: bumps its own slot; reads the agent's report request."""

    def __init__(self, path: Path, local_rank: int):
        fd = os.open(path, os.O_RDWR)
        try:
            self._mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        magic, slots, _ = _HEADER.unpack_from(self._mm, 0)
        if magic != MAGIC or not 0 <= local_rank < slots:
            self._mm.close()
            raise ValueError(f"{path} is not a heartbeat file with a slot for local rank {local_rank}")
        self._off = _offset(local_rank)
        # a new rank starts its slot afresh (a restart reuses the file); the agent trusts a slot only
        # once it holds the pid of the rank it watches, so an earlier attempt's beats never count
        self._beats = 0
        _SLOT.pack_into(self._mm, self._off, 0, 0, 0, self.report_request(), os.getpid())

    def beat(self, phase: int, step: int) -> None:
        _BEAT.pack_into(self._mm, self._off + 8, step, phase)
        self._beats += 1
        _COUNT.pack_into(self._mm, self._off, self._beats)

    def report_request(self) -> int:
        return _HEADER.unpack_from(self._mm, 0)[2]

    def answer(self, request: int) -> None:
        _ANSWER.pack_into(self._mm, self._off + 20, request)


def dump_paths(out: Path, rank: int, request: int) -> tuple[Path, Path]:
    """Where rank `rank` writes its thread stacks and flight record for report request `request`."""
    stem = Path(out) / f"rank{rank}-{request}"
    return stem.with_suffix(".stacks.json"), stem.with_suffix(".flight.json")


def default_dir() -> Path:
    """Where heartbeat files live: /dev/shm (memory) where it exists, else the temporary directory."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    import tempfile

    return Path(tempfile.gettempdir())


def open_rank_heartbeat(environ, local_rank: int) -> Optional[RankHeartbeat]:
    """The rank's heartbeat when its agent watches (HPCGPU_HEARTBEAT_FILE), else None."""
    from hpcgpu.contract.envnames import HEARTBEAT_FILE

    path = environ.get(HEARTBEAT_FILE)
    if not path:
        return None
    try:
        return RankHeartbeat(Path(path), local_rank)
    except (OSError, ValueError):
        return None
