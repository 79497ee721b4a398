"""The ranks' output, read by their node agent: into `<run dir>/logs/rank<N>.log` and onto the console.

Each rank's fd 1 and fd 2 are pipes from its first instruction on (torch elastic starts the rank
with them, through a LogsSpecs whose "files" are this agent's pipe ends), so everything reaches
the agent: Python, C libraries such as NCCL, even an import error before the worker runs. One
thread reads every pipe and writes whole lines to the rank's log (bars collapsed to plain lines,
hpcgpu/contract/ranklines.py) and a time index for `hpcgpu logs --all`. The log is written before
anything is shown, and the console has its own thread behind a bounded queue, so a console that
stops reading (a paused terminal, `| less`) never stalls the ranks: lines that do not fit are
counted and said to be in the logs. What the console shows is `logging.console`:
    rank0   rank 0's lines as they are (the default)
    all     every rank's lines, each prefixed `[rank N] `
    none    nothing from the ranks
Rank stdout goes to the agent's stdout and rank stderr to its stderr. A failed rank's last stderr
lines are kept (stderr_tail) for the failure report, which prints in every mode.
Imports torch lazily (logs_specs only).
"""

from __future__ import annotations

import os
import queue
import selectors
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO, Optional

from hpcgpu.contract.ranklines import ConsoleView, LineSplitter, index_record, rank_prefix

#: stderr lines kept per rank for the failure report
TAIL_LINES = 12
#: console lines waiting to be written before new ones are dropped (the log keeps all)
CONSOLE_BACKLOG = 10_000
CONSOLE_MODES = ("rank0", "all", "none")


def allow_open_files(n: int) -> None:
    """Raise this process's soft limit on open files to n if it is lower (and the hard limit allows):
    each local rank costs the agent 8 (4 pipe ends, torch elastic's 2 copies, its log and index),
    and 128 CPU ranks would pass the usual 1024."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < n:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n if hard == resource.RLIM_INFINITY else min(n, hard), hard))
    except (ImportError, ValueError, OSError):
        pass  # the limit stays; a run with that many ranks fails with EMFILE, naming it


class _RankPipes:
    """One rank's two pipes in one attempt, its log and index, and what is left of its lines."""

    def __init__(self, rank: int, logs_dir: Path):
        self.rank = rank
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self.log = os.open(logs_dir / f"rank{rank}.log", flags, 0o600)
        self.idx = os.open(logs_dir / f"rank{rank}.idx", flags, 0o600)
        self.offset = os.fstat(self.log).st_size
        self.split = {"o": LineSplitter(), "e": LineSplitter()}
        self.shown = {"o": b"", "e": b""}
        self.tail: deque = deque(maxlen=TAIL_LINES)

    def write(self, stream: str, lines: list[bytes]) -> Optional[OSError]:
        """Append whole lines to the log and their record to the index; the error if the disk refused."""
        if stream == "e":
            self.tail.extend(line.decode(errors="replace") for line in lines)
        data = b"".join(line + b"\n" for line in lines)
        try:
            written = os.write(self.log, data)  # a regular file: written whole unless the disk is full
            self.offset += written
            os.write(self.idx, index_record(self.offset, time.time(), stream))
        except OSError as e:  # ENOSPC, EDQUOT: the rank must go on (its pipe must be read), the console too
            return e
        return None

    def close(self) -> None:
        for fd in (self.out_r, self.out_w, self.err_r, self.err_w, self.log, self.idx):
            os.close(fd)


class RankLogs:
    """Reads this node's ranks' pipes (one attempt at a time) and feeds the console thread."""

    def __init__(self, run_dir: str | Path, mode: str, out: Optional[BinaryIO] = None,
                 err: Optional[BinaryIO] = None, tty: Optional[bool] = None):
        self.logs_dir = Path(run_dir) / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self._out = out or sys.stdout.buffer
        self._err = err or sys.stderr.buffer
        terminal = [s for s, f in (("o", self._out), ("e", self._err)) if (f.isatty() if tty is None else tty)]
        self._view = ConsoleView(terminal)
        self._queue: queue.Queue = queue.Queue(CONSOLE_BACKLOG)
        self._dropped = 0
        self._console = threading.Thread(target=self._show, name="hpcgpu-console", daemon=True)
        self._console.start()
        self._ranks: list[_RankPipes] = []
        self._tails: dict[int, list[str]] = {}
        self._reader: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._woken = 0
        self._cond = threading.Condition()
        self._closed = False
        self._unwritable: set[int] = set()
        self._failed: Optional[Exception] = None

    # -- attempts -------------------------------------------------------------------------------
    def start_attempt(self, ranks: dict[int, int]) -> dict[int, tuple[str, str]]:
        """Pipes for {local rank: global rank}; returns {local rank: (stdout path, stderr path)}
        for torch elastic to open (the agent's own pipe ends, by /dev/fd)."""
        self.end_attempt()
        allow_open_files(64 + 8 * len(ranks))
        self._ranks = [_RankPipes(rank, self.logs_dir) for _, rank in sorted(ranks.items())]
        self._stop.clear()
        self._wake = os.pipe()  # settle and end_attempt wake the reader instead of waiting out its poll
        for fd in self._wake:
            os.set_blocking(fd, False)
        self._reader = threading.Thread(target=self._read, name="hpcgpu-ranklogs", daemon=True)
        self._reader.start()
        return {local: (f"/dev/fd/{p.out_w}", f"/dev/fd/{p.err_w}")
                for local, p in zip(sorted(ranks), self._ranks)}

    def settle(self, timeout: float = 5.0) -> None:
        """Return once everything written before this call has been read (a dead rank's last lines)."""
        with self._cond:
            # the pass that reads this nudge selected after it: it reads all that was written before
            target = self._woken + 1
            self._nudge()
            self._cond.wait_for(lambda: self._woken >= target or self._reader is None
                                or not self._reader.is_alive(), timeout)

    def end_attempt(self) -> None:
        """Read what the attempt's (ended) ranks left, end their unfinished lines, close the pipes."""
        if self._reader is None:
            return
        self._stop.set()
        self._nudge()
        self._reader.join(timeout=10)
        self._reader = None
        for fd in self._wake:
            os.close(fd)
        for p in self._ranks:
            for stream in ("o", "e"):
                if self._failed is None:
                    self._take(p, stream, b"", end=True)
            self._tails[p.rank] = list(p.tail)
            p.close()
        self._ranks = []

    def close(self, timeout: float = 10.0) -> None:
        """End the attempt and let the console show everything queued (then it stops)."""
        self.end_attempt()
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._console.join(timeout)

    def stderr_tail(self, rank: int) -> list[str]:
        """The last stderr lines of a rank of this node (the current attempt's, else the last one's)."""
        for p in self._ranks:
            if p.rank == rank:
                return list(p.tail)
        return self._tails.get(rank, [])

    # -- the reader thread ----------------------------------------------------------------------
    def _nudge(self) -> None:
        try:
            os.write(self._wake[1], b".")
        except (BlockingIOError, OSError):
            pass  # already nudged and not yet read: the reader wakes anyway

    def _read(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake[0], selectors.EVENT_READ, None)
        for p in self._ranks:
            for fd, stream in ((p.out_r, "o"), (p.err_r, "e")):
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ, (p, stream))
        try:
            while True:
                stopping = self._stop.is_set()
                woken = False
                for key, _ in sel.select(timeout=0 if stopping else 0.1):
                    if key.data is None:
                        while self._wake_read():
                            woken = True
                    elif self._failed is None:
                        self._drain(sel, key)
                    else:
                        self._discard(sel, key)
                if woken:
                    with self._cond:
                        self._woken += 1
                        self._cond.notify_all()
                if stopping:
                    return
        finally:
            sel.close()

    def _wake_read(self) -> bool:
        try:
            return bool(os.read(self._wake[0], 512))
        except BlockingIOError:
            return False

    def _drain(self, sel: selectors.BaseSelector, key: Any) -> None:
        p, stream = key.data
        while True:
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                sel.unregister(key.fd)
                return
            try:
                self._take(p, stream, chunk)
            except Exception as e:  # a bug here must not leave the ranks blocked on a full pipe
                self._failed = e
                self._emit(("line", None, "e", f"hpcgpu: internal error while copying rank output ({e!r}); "
                                               "from here on it is discarded so the ranks go on".encode()))
                return

    @staticmethod
    def _discard(sel: selectors.BaseSelector, key: Any) -> None:
        try:
            while os.read(key.fd, 1 << 16):
                pass
            sel.unregister(key.fd)  # end of file
        except BlockingIOError:
            pass

    def _take(self, p: _RankPipes, stream: str, chunk: bytes, end: bool = False) -> None:
        lines = p.split[stream].feed(chunk) + (p.split[stream].flush() if end else [])
        if lines:
            error = p.write(stream, lines)
            if error is not None and p.rank not in self._unwritable:
                self._unwritable.add(p.rank)
                self._emit(("line", None, "e", f"hpcgpu: cannot write the log of rank {p.rank} ({error}); "
                                                "its lines go on to the console only".encode()))
        if self.mode == "none" or (self.mode == "rank0" and p.rank != 0):
            return
        prefix = rank_prefix(p.rank) if self.mode == "all" else b""
        source = (p.rank, stream)
        for line in lines:
            self._emit(("line", source, stream, prefix + line))
        now = p.split[stream].transient()
        if now != p.shown[stream]:
            p.shown[stream] = now
            self._emit(("transient", source, stream, prefix + now if now else b""))

    def _emit(self, event: tuple) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._dropped += 1

    # -- the console thread ---------------------------------------------------------------------
    def _show(self) -> None:
        shown_dropped = 0
        while True:
            event = self._queue.get()
            writes = []
            if event is not None:
                kind, source, stream, text = event
                writes = (self._view.line if kind == "line" else self._view.transient)(source, stream, text)
            if self._dropped != shown_dropped and (event is None or self._queue.empty()):
                note = (f"hpcgpu: {self._dropped - shown_dropped} lines of the ranks were not shown (the console "
                        "was not keeping up); every line is in the logs: hpcgpu logs RUN --all")
                writes.append(("e", note.encode() + b"\n"))
                shown_dropped = self._dropped
            for target, data in writes:
                self._write(self._out if target == "o" else self._err, data)
            if event is None:
                break
        for f in (self._out, self._err):
            self._write(f, b"")

    @staticmethod
    def _write(f: BinaryIO, data: bytes) -> None:
        try:
            if data:
                f.write(data)
            f.flush()
        except (OSError, ValueError):  # a closed console (the terminal went away): the logs have it all
            pass


def logs_specs(rank_logs: RankLogs, log_dir: str) -> Any:
    """torch elastic's DefaultLogsSpecs (error files with the ranks' tracebacks, under log_dir), with
    each rank's stdout and stderr going to rank_logs' pipes instead of the agent's console."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs

    class PipedLogsSpecs(DefaultLogsSpecs):
        def reify(self, envs):
            dest = super().reify(envs)
            paths = rank_logs.start_attempt({local: int(env["RANK"]) for local, env in envs.items()})
            dest.stdouts = {local: out for local, (out, _) in paths.items()}
            dest.stderrs = {local: err for local, (_, err) in paths.items()}
            dest.tee_stdouts, dest.tee_stderrs = {}, {}
            return dest

    return PipedLogsSpecs(log_dir=log_dir)
