"""Rank 0's output on the node agent's console.

Every rank writes its whole output (fd 1 and 2, so NCCL's C-level lines too) to
`<run dir>/logs/rank<N>.log`. The node's local rank 0 tells its agent which file and offset it
writes through a pointer file named after the agent's pid; the agent follows that file and copies
it to its own stdout. Ranks never share the terminal, so progress bars stay intact, and
`hpcgpu logs RUN --rank N` shows the others. Torch-free.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO, Optional


def pointer_path(run_dir: str | Path, agent_pid: int) -> Path:
    """The file through which local rank 0 tells agent `agent_pid` where its log is."""
    return Path(run_dir) / "logs" / f".console.{agent_pid}"


def announce(run_dir: str | Path, log_path: str | Path, offset: int, agent_pid: Optional[int] = None) -> None:
    """Called by local rank 0: 'my output goes to log_path from offset on'."""
    ptr = pointer_path(run_dir, agent_pid or os.getppid())
    tmp = ptr.with_name(ptr.name + ".tmp")
    tmp.write_text(f"{offset} {log_path}\n")
    os.replace(tmp, ptr)


class ConsoleFollower:
    """A thread copying the announced rank log to `out` until stopped (then drains what is left)."""

    def __init__(self, run_dir: str | Path, out: BinaryIO, agent_pid: Optional[int] = None, poll_s: float = 0.05):
        self._ptr = pointer_path(run_dir, agent_pid or os.getpid())
        self._out = out
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpcgpu-console", daemon=True)
        self._source: Optional[str] = None
        self._file: Optional[BinaryIO] = None

    def start(self) -> "ConsoleFollower":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._ptr.unlink()
        except OSError:
            pass

    def _switch_if_announced(self) -> None:
        try:
            text = self._ptr.read_text()
        except OSError:
            return
        if text == self._source or not text.endswith("\n"):
            return
        offset, path = text.strip().split(" ", 1)
        if self._file:
            # The previous source up to its end; when a new attempt appends to the same file, its end
            # is the announced offset (what lies beyond is the new attempt's, copied once, below).
            same_file = self._file.name == path
            while self._copy(limit=int(offset) if same_file else None):
                pass
            self._file.close()
        self._source = text
        self._file = open(path, "rb")
        self._file.seek(int(offset))

    def _copy(self, limit: Optional[int] = None) -> bool:
        if not self._file:
            return False
        size = 1 << 16 if limit is None else min(1 << 16, limit - self._file.tell())
        if size <= 0:
            return False
        data = self._file.read(size)
        if data:
            self._out.write(data)
            self._out.flush()
        return bool(data)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._switch_if_announced()
            if not self._copy():
                self._stop.wait(self._poll_s)
        self._switch_if_announced()
        while self._copy():
            pass
        if self._file:
            self._file.close()
