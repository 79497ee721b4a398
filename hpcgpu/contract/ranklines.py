"""Lines of many ranks, for people: whole lines, `[rank N]` prefixes, time order, identical lines grouped.

The node agent reads each rank's stdout and stderr from pipes (hpcgpu/agent/ranklogs.py). It writes
whole lines to `<run dir>/logs/rank<N>.log` (plain: a progress bar's `\\r` redraws keep only their
last state) and, per write, one record to `rank<N>.idx`: `<end offset> <unix time> <o|e>`, i.e. the
lines of the log up to that byte offset were read at that time from stdout (o) or stderr (e). The
time is the agent's clock when it read the lines: one clock for every rank of a node, nothing for a
rank to do, and NCCL's C-level lines get one too. `hpcgpu logs RUN --all` merges the ranks' logs
by it. Logs without an index (run dirs of older versions, ranks started by plain torchrun) still
merge, rank by rank. Torch-free, standard library only: the agent and the host both use it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

#: a line longer than this without a newline is written out as it stands (bounded memory)
MAX_LINE = 64 * 1024
#: clears from the cursor to the end of the line (ANSI "erase in line"), after a bar is redrawn
CLEAR_TO_EOL = b"\x1b[K"


def collapse_cr(line: bytes) -> bytes:
    """What a terminal would show of one line: the text after its last carriage return
    (a CRLF line ending is a line ending, not a redraw)."""
    line = line.rstrip(b"\r")
    return line.rsplit(b"\r", 1)[-1]


@dataclass
class LineSplitter:
    """Bytes of one stream in, whole lines out; the unfinished line is `pending`, `transient()` shows it."""

    pending: bytes = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The lines `data` completes (without their newline, `\\r` redraws collapsed)."""
        *done, rest = (self.pending + data).split(b"\n")
        lines = [collapse_cr(line) for line in done]
        if b"\r" in rest:
            rest = b"\r" + rest.rsplit(b"\r", 1)[-1]  # earlier redraws are gone from the screen too
        if len(rest) > MAX_LINE:
            lines.append(collapse_cr(rest))
            rest = b""
        self.pending = rest
        return lines

    def transient(self) -> bytes:
        """A bar being redrawn (an unfinished line with a `\\r`) as a terminal shows it now, else b"".
        Other unfinished lines are mostly a line split across two reads: shown once they end."""
        return collapse_cr(self.pending) if b"\r" in self.pending else b""

    def flush(self) -> list[bytes]:
        """At the end: the unfinished last line, as a line of its own."""
        rest, self.pending = self.pending, b""
        return [collapse_cr(rest)] if rest else []


def rank_prefix(rank: int) -> bytes:
    """The console/--all prefix of one rank's line."""
    return f"[rank {rank}] ".encode()


def rank_ranges(ranks: Iterable[int]) -> str:
    """0,1,2,3,5,7,8 -> '0-3,5,7-8'."""
    out: list[str] = []
    ordered = sorted(set(ranks))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def group_prefix(ranks: list[int]) -> str:
    """`[rank 3] ` for one rank, `[ranks 0-7] ` for several."""
    return f"[rank {ranks[0]}] " if len(ranks) == 1 else f"[ranks {rank_ranges(ranks)}] "


def index_record(end_offset: int, t: float, stream: str) -> bytes:
    """One line of rank<N>.idx: the log's lines up to end_offset were read at time t from stream (o|e)."""
    return f"{end_offset} {t:.3f} {stream}\n".encode()


def _read_index(path: Path) -> list[tuple[int, float]]:
    """(end offset, time) records of an index; damaged lines are skipped, times never go back."""
    out: list[tuple[int, float]] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    last = 0.0
    for line in text.splitlines():
        parts = line.split()
        try:
            end, t = int(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            continue
        last = max(last, t)  # a clock stepped back (NTP) must not reorder one rank's own lines
        out.append((end, last))
    return out


def timed_lines(log: Path, index: Optional[Path] = None) -> list[tuple[float, str]]:
    """A rank log's lines with the time each was read. Lines the index does not cover (no index,
    or lines written before it) take the time of the line before them (0.0 at the start)."""
    data = log.read_bytes()
    records = _read_index(index) if index is not None else []
    out: list[tuple[float, str]] = []
    t, pos, r = 0.0, 0, 0
    for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        end = pos + len(line) + 1
        while r < len(records) and records[r][0] < end:
            r += 1  # records before this line: stale (e.g. a log rotated away)
        if r < len(records):
            t = max(t, records[r][1])
        pos = end
        out.append((t, line.decode(errors="replace")))
    return out


def merge_ranks(per_rank: dict[int, list[tuple[float, str]]]) -> Iterator[tuple[float, int, str]]:
    """All ranks' lines in time order; lines read at the same time go by rank, each rank's in its order."""
    streams = ([(t, rank, i, text) for i, (t, text) in enumerate(lines)] for rank, lines in per_rank.items())
    for t, rank, _i, text in heapq.merge(*streams):
        yield t, rank, text


@dataclass
class _Group:
    first: tuple[float, int, int]
    text: str
    ranks: list[int] = field(default_factory=list)


def dedup(merged: Iterable[tuple[float, int, str]]) -> list[tuple[list[int], str]]:
    """Identical lines of several ranks as one: the k-th time ranks print the same text is one event
    ("[ranks 0-7] loading data"), shown where its first rank printed it."""
    groups: dict[tuple[str, int], _Group] = {}
    seen: dict[tuple[int, str], int] = {}
    for n, (t, rank, text) in enumerate(merged):
        k = seen.get((rank, text), 0)
        seen[(rank, text)] = k + 1
        group = groups.setdefault((text, k), _Group((t, rank, n), text))
        group.ranks.append(rank)
    return [(sorted(g.ranks), g.text) for g in sorted(groups.values(), key=lambda g: g.first)]


def rank_logs(logs_dir: Path) -> dict[int, Path]:
    """rank -> rank<N>.log in a run's logs directory."""
    out = {}
    for path in logs_dir.glob("rank*.log"):
        number = path.stem[len("rank"):]
        if number.isdigit():
            out[int(number)] = path
    return dict(sorted(out.items()))


class ConsoleView:
    """What to write to a console (stream 'o' = stdout, 'e' = stderr) so that lines of several ranks
    stay whole and one live line (a progress bar) stays at the bottom of a terminal, like tqdm.write.

    Pure: returns the writes; the agent's console thread performs them. `terminal` holds the streams
    that are a terminal (one terminal: stdout and stderr usually share it). There a bar is drawn with
    `\r`; elsewhere (a file, a pipe) unfinished lines are not shown: they arrive once they end."""

    def __init__(self, terminal: Iterable[str] = ()):
        self.terminal = frozenset(terminal)
        self._live: Optional[tuple[object, str, bytes]] = None  # (source, stream, drawn text)

    def line(self, source: object, stream: str, text: bytes) -> list[tuple[str, bytes]]:
        """A whole line of `source` (a rank's stream); it replaces that source's live line."""
        if stream not in self.terminal or self._live is None:
            return [(stream, text + b"\n")]
        writes = [(self._live[1], b"\r" + CLEAR_TO_EOL), (stream, text + b"\n")]
        if self._live[0] != source:
            writes.append((self._live[1], b"\r" + self._live[2]))  # someone else's bar: draw it again below
        else:
            self._live = None
        return writes

    def transient(self, source: object, stream: str, text: bytes) -> list[tuple[str, bytes]]:
        """The unfinished line of `source` as it stands (b"": nothing unfinished)."""
        if stream not in self.terminal:
            return []
        if not text:
            if self._live is not None and self._live[0] == source:
                writes, self._live = [(self._live[1], b"\r" + CLEAR_TO_EOL)], None
                return writes
            return []
        self._live = (source, stream, text)
        return [(stream, b"\r" + text + CLEAR_TO_EOL)]
