"""Lines of many ranks: whole lines, bars collapsed, rank ranges, merge by the agent's read times, dedup."""

from __future__ import annotations

import pytest

from hpcgpu.contract.ranklines import (CLEAR_TO_EOL, MAX_LINE, ConsoleView, LineSplitter, collapse_cr, dedup,
                                       group_prefix, index_record, merge_ranks, rank_logs, rank_ranges, timed_lines)


@pytest.mark.parametrize("line,shown", [
    (b"plain", b"plain"),
    (b"\r[##..] 1/4\r[###.] 2/4\r[####] 4/4", b"[####] 4/4"),
    (b"windows line\r", b"windows line"),  # CRLF: a line ending, not a redraw to nothing
    (b"50%\r100%\r\r", b"100%"),
])
def test_collapse_cr_keeps_what_a_terminal_shows(line, shown):
    assert collapse_cr(line) == shown


def test_splitter_returns_whole_lines_only_and_keeps_the_rest():
    s = LineSplitter()
    assert s.feed(b"loading da") == []
    assert s.feed(b"ta\nstep 1\nstep") == [b"loading data", b"step 1"]
    assert s.transient() == b""  # a line split across reads, not a bar: nothing to draw yet
    assert s.flush() == [b"step"]  # a last line without newline still reaches the log
    assert s.flush() == []


def test_splitter_turns_a_bar_into_one_plain_line_and_shows_its_current_state():
    s = LineSplitter()
    assert s.feed(b"\r[#...] 1/4") == [] and s.transient() == b"[#...] 1/4"
    assert s.feed(b"\r[##..] 2/4") == [] and s.transient() == b"[##..] 2/4"
    assert s.pending == b"\r[##..] 2/4"  # old redraws are not kept: memory stays bounded
    assert s.feed(b"\r[####] 4/4\nsaved\n") == [b"[####] 4/4", b"saved"]
    assert s.transient() == b""


def test_splitter_cuts_a_line_that_never_ends():
    s = LineSplitter()
    assert s.feed(b"x" * (MAX_LINE + 1)) == [b"x" * (MAX_LINE + 1)]
    assert s.pending == b""


@pytest.mark.parametrize("ranks,text", [
    ([0], "0"), ([0, 1, 2, 3, 4, 5, 6, 7], "0-7"), ([7, 0, 1, 2, 3, 5, 8], "0-3,5,7-8"), ([3, 3, 4], "3-4"),
    ([], ""),
])
def test_rank_ranges(ranks, text):
    assert rank_ranges(ranks) == text


def test_group_prefix_names_one_rank_or_a_range():
    assert group_prefix([3]) == "[rank 3] "
    assert group_prefix([0, 1, 2, 3]) == "[ranks 0-3] "


def write_log(tmp_path, rank, lines_at):
    """rank<N>.log and rank<N>.idx as the agent writes them: [(time, [lines]), ...], one record per write."""
    log, idx = tmp_path / f"rank{rank}.log", tmp_path / f"rank{rank}.idx"
    data, index = b"", b""
    for t, lines in lines_at:
        data += b"".join(line.encode() + b"\n" for line in lines)
        index += index_record(len(data), t, "o")
    log.write_bytes(data)
    idx.write_bytes(index)
    return log, idx


def test_timed_lines_give_each_line_the_time_of_the_write_that_held_it(tmp_path):
    log, idx = write_log(tmp_path, 0, [(10.0, ["a", "b"]), (12.5, ["c"])])
    assert timed_lines(log, idx) == [(10.0, "a"), (10.0, "b"), (12.5, "c")]


def test_lines_without_index_keep_their_order_and_the_time_before_them(tmp_path):
    log, idx = write_log(tmp_path, 0, [(10.0, ["a"])])
    with open(log, "ab") as f:
        f.write(b"written by plain torchrun\nlast")  # no index record; the last line has no newline
    assert timed_lines(log, idx) == [(10.0, "a"), (10.0, "written by plain torchrun"), (10.0, "last")]
    assert timed_lines(log, tmp_path / "missing.idx") == [(0.0, "a"), (0.0, "written by plain torchrun"), (0.0, "last")]


def test_a_clock_stepping_back_does_not_reorder_a_ranks_own_lines(tmp_path):
    log, idx = write_log(tmp_path, 0, [(10.0, ["a"]), (9.0, ["b"]), (11.0, ["c"])])
    assert [t for t, _ in timed_lines(log, idx)] == [10.0, 10.0, 11.0]


def test_merge_orders_by_time_then_rank_and_keeps_each_ranks_order():
    merged = list(merge_ranks({
        0: [(1.0, "r0 a"), (3.0, "r0 b"), (3.0, "r0 c")],
        1: [(2.0, "r1 a"), (3.0, "r1 b")],
        2: [(0.0, "old log, no index")],
    }))
    assert [text for _, _, text in merged] == ["old log, no index", "r0 a", "r1 a", "r0 b", "r0 c", "r1 b"]


def test_dedup_groups_the_kth_occurrence_of_a_line_across_ranks():
    merged = [
        (1.0, 0, "loading data"), (1.1, 1, "loading data"), (1.2, 2, "loading data"), (1.3, 3, "loading data"),
        (2.0, 0, "step 1 loss 0.5"),
        (3.0, 1, "loading data"),  # rank 1 loads again later: a second event, not part of the first
        (3.1, 3, "loading data"),
        (4.0, 2, "only rank 2"),
    ]
    assert dedup(merged) == [
        ([0, 1, 2, 3], "loading data"),
        ([0], "step 1 loss 0.5"),
        ([1, 3], "loading data"),
        ([2], "only rank 2"),
    ]


def test_dedup_of_thousands_of_ranks_is_one_line():
    merged = merge_ranks({rank: [(float(rank % 7), "NCCL INFO init done")] for rank in range(4096)})
    assert dedup(merged) == [(list(range(4096)), "NCCL INFO init done")]


def test_rank_logs_finds_numbered_logs_only(tmp_path):
    for name in ("rank10.log", "rank2.log", "rank2.idx", "ranking.log", "agent.log"):
        (tmp_path / name).write_text("")
    assert list(rank_logs(tmp_path)) == [2, 10]


def test_console_view_keeps_a_bar_at_the_bottom_on_a_terminal():
    view = ConsoleView(terminal={"o", "e"})
    bar = (0, "o")
    assert view.transient(bar, "o", b"[#...] 1/4") == [("o", b"\r[#...] 1/4" + CLEAR_TO_EOL)]
    # another rank's line: clear the bar, print the line, draw the bar again below it
    assert view.line((1, "e"), "e", b"[rank 1] warning") == [
        ("o", b"\r" + CLEAR_TO_EOL), ("e", b"[rank 1] warning\n"), ("o", b"\r[#...] 1/4")]
    # the bar's own line ends it
    assert view.line(bar, "o", b"[####] 4/4") == [("o", b"\r" + CLEAR_TO_EOL), ("o", b"[####] 4/4\n")]
    assert view.line((1, "o"), "o", b"next") == [("o", b"next\n")]  # no bar left to redraw


def test_console_view_leaves_the_bar_alone_for_lines_going_elsewhere():
    view = ConsoleView(terminal={"o"})  # stdout a terminal, stderr a file
    view.transient((0, "o"), "o", b"[#...] 1/4")
    assert view.line((1, "e"), "e", b"warning") == [("e", b"warning\n")]
    assert view.transient((1, "e"), "e", b"50%") == []


def test_console_view_shows_no_unfinished_lines_off_a_terminal():
    view = ConsoleView(terminal=())
    assert view.transient((0, "o"), "o", b"[#...] 1/4") == []
    assert view.line((0, "o"), "o", b"[####] 4/4") == [("o", b"[####] 4/4\n")]
