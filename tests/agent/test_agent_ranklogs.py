"""The node agent's reader of rank output, on real pipes: what reaches the log, the index and the console
in each console mode. A "rank" here is this test writing to the pipe ends the agent hands torch elastic."""

from __future__ import annotations

import io
import os
import threading

import pytest

from hpcgpu.agent.ranklogs import RankLogs
from hpcgpu.contract.ranklines import timed_lines


class Console(io.BytesIO):
    """A console that is (or is not) a terminal."""

    def __init__(self, tty: bool = False):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def opened(paths: dict, local: int) -> tuple[int, int]:
    """The rank's fd 1 and fd 2, opened from the paths as torch elastic opens them."""
    out, err = paths[local]
    return os.open(out, os.O_WRONLY), os.open(err, os.O_WRONLY)


def finish_writing(write, timeout: float = 60) -> None:
    """Run a rank's writes; fail (instead of hanging) if the agent leaves the rank blocked on its pipe."""
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout)
    assert not writer.is_alive(), f"the rank was still blocked writing after {timeout}s: nobody read its pipe"


def run_ranks(tmp_path, mode: str, writes: list[tuple[int, str, bytes]], tty: bool = False, console=Console,
              settle_each: bool = True):
    """Two ranks (global 0 and 1) write `writes` [(rank, 'o'|'e', bytes)], exit, and the agent closes.
    The agent reads each write before the next is made (settle): one read per write, as when ranks
    print at human pace."""
    out, err = console(tty), console(tty)
    logs = RankLogs(tmp_path, mode, out, err)
    paths = logs.start_attempt({0: 0, 1: 1})
    fds = {rank: opened(paths, rank) for rank in (0, 1)}

    def rank_writes():
        for rank, stream, data in writes:
            os.write(fds[rank][0 if stream == "o" else 1], data)
            if settle_each:
                logs.settle()

    finish_writing(rank_writes)
    for pair in fds.values():
        for fd in pair:
            os.close(fd)
    logs.settle()
    tail = logs.stderr_tail(1)
    logs.close()
    return out.getvalue(), err.getvalue(), tail


WRITES = [
    (0, "o", b"loading data\n"), (1, "o", b"loading data\n"),
    (1, "e", b"warning: slow disk\n"),
    (0, "o", b"step 1\nstep 2 (no newline)"),
    (1, "e", b"Traceback (most recent call last):\nValueError: boom\n"),
]


def test_console_all_prefixes_every_ranks_lines_and_keeps_stdout_and_stderr_apart(tmp_path):
    out, err, _ = run_ranks(tmp_path, "all", WRITES)
    assert out.splitlines() == [b"[rank 0] loading data", b"[rank 1] loading data", b"[rank 0] step 1",
                                b"[rank 0] step 2 (no newline)"]  # the unfinished last line, at the end
    assert err.splitlines() == [b"[rank 1] warning: slow disk", b"[rank 1] Traceback (most recent call last):",
                                b"[rank 1] ValueError: boom"]


def test_console_rank0_shows_rank_0_unprefixed_and_none_shows_nothing(tmp_path):
    out, err, _ = run_ranks(tmp_path / "a", "rank0", WRITES)
    assert out == b"loading data\nstep 1\nstep 2 (no newline)\n" and err == b""
    out, err, tail = run_ranks(tmp_path / "b", "none", WRITES)
    assert out == err == b""
    assert tail == ["warning: slow disk", "Traceback (most recent call last):", "ValueError: boom"]  # for the report


@pytest.mark.parametrize("mode", ["rank0", "all", "none"])
def test_every_rank_logs_whole_lines_with_read_times_in_every_mode(tmp_path, mode):
    run_ranks(tmp_path, mode, WRITES)
    logs = tmp_path / "logs"
    assert (logs / "rank0.log").read_bytes() == b"loading data\nstep 1\nstep 2 (no newline)\n"
    assert (logs / "rank1.log").read_bytes() == (b"loading data\nwarning: slow disk\n"
                                                 b"Traceback (most recent call last):\nValueError: boom\n")
    timed = timed_lines(logs / "rank1.log", logs / "rank1.idx")
    assert len(timed) == 4 and all(t > 0 for t, _ in timed)
    assert [line.split()[2] for line in (logs / "rank1.idx").read_text().splitlines()] == ["o", "e", "e"]


def test_a_bar_on_a_terminal_is_drawn_but_the_log_gets_its_last_state_only(tmp_path):
    bar = [(0, "o", b"\r[#...] 1/4"), (0, "o", b"\r[##..] 2/4"), (0, "o", b"\r[####] 4/4\ndone\n")]
    out, _, _ = run_ranks(tmp_path, "rank0", bar, tty=True)
    assert b"\r[" in out  # drawn in place on the terminal
    assert (tmp_path / "logs" / "rank0.log").read_bytes() == b"[####] 4/4\ndone\n"  # no \r in the log


def test_a_new_attempt_appends_to_the_same_logs(tmp_path):
    logs = RankLogs(tmp_path, "none", Console(), Console())
    for attempt in (1, 2):
        paths = logs.start_attempt({0: 0})
        fd_out, fd_err = opened(paths, 0)
        os.write(fd_out, f"attempt {attempt}\n".encode())
        os.close(fd_out)
        os.close(fd_err)
    logs.close()
    log = tmp_path / "logs" / "rank0.log"
    assert log.read_text() == "attempt 1\nattempt 2\n"
    assert [text for _, text in timed_lines(log, log.with_suffix(".idx"))] == ["attempt 1", "attempt 2"]


def test_a_console_that_stops_reading_never_blocks_the_ranks(tmp_path):
    class Stuck(Console):
        """A terminal paused with Ctrl-S, or `| less` nobody scrolls: writes block until released."""
        released = threading.Event()

        def write(self, data):
            self.released.wait(60)
            return super().write(data)

    out, err = Stuck(), Stuck()
    logs = RankLogs(tmp_path, "all", out, err)
    fd_out, fd_err = opened(logs.start_attempt({0: 0}), 0)
    finish_writing(lambda: [os.write(fd_out, (b"x" * 100 + b"\n") * 100) for _ in range(200)])  # 2 MB:
    # far more than a pipe and the console backlog hold
    logs.settle()
    assert (tmp_path / "logs" / "rank0.log").stat().st_size == 20_000 * 101  # all logged, console or not
    os.close(fd_out)
    os.close(fd_err)
    Stuck.released.set()
    logs.close()
    shown = out.getvalue()
    assert shown.count(b"[rank 0] " + b"x" * 100 + b"\n") < 20_000  # the console lost lines ...
    assert b"lines of the ranks were not shown" in err.getvalue()  # ... and says so, and where they are


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_the_log_does_not_stop_the_reader_nor_the_console(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "rank0.log").symlink_to("/dev/full")  # every write: ENOSPC
    out, err, _ = run_ranks(tmp_path, "rank0", [(0, "o", b"step 1\n"), (0, "o", b"step 2\n")] * 50,
                            settle_each=False)
    assert out == b"step 1\nstep 2\n" * 50  # the reader went on: the rank was never left blocked
    assert err.count(b"hpcgpu: cannot write the log of rank 0") == 1 and b"No space left" in err


def test_a_bug_in_copying_never_leaves_the_ranks_blocked(tmp_path, monkeypatch):
    def broken(self, p, stream, chunk, end=False):
        raise RuntimeError("a bug")

    monkeypatch.setattr(RankLogs, "_take", broken)
    lines = [(0, "o", b"x" * 100 + b"\n")] * 5_000  # 500 KB: blocks a rank whose pipe nobody reads
    out, err, _ = run_ranks(tmp_path, "rank0", lines, settle_each=False)  # returns: the writes all went through
    assert b"internal error while copying rank output (RuntimeError('a bug'))" in err
