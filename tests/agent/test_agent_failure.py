"""What the node agent says when ranks fail: the first failing rank with its traceback, the ranks
stopped because of it after, and a hint for the well-known failures only."""

from __future__ import annotations

import signal

from tests.helpers.elastic_fakes import Failure
from hpcgpu.agent.failure import describe_failure


TERM = -signal.SIGTERM
KILL = -signal.SIGKILL


def tb(text: str) -> dict:
    """torch elastic's error file content."""
    return {"message": "RuntimeError", "extraInfo": {"py_callstack": text, "timestamp": "0"}}


def test_the_rank_that_failed_first_is_named_first_and_sigtermed_ranks_after():
    # torch elastic lists ranks it stopped with SIGTERM wherever; the one that died on its own leads
    failures = {0: Failure(TERM, 0, 100), 1: Failure(TERM, 1, 101), 2: Failure(1, 0, 102, tb("Traceback\n  boom")),
                3: Failure(TERM, 1, 103)}
    lines = describe_failure(failures).splitlines()
    assert lines[0] == "rank 2 (local rank 0, pid 102) failed with exit code 1"
    assert lines[1:3] == ["  Traceback", "    boom"]
    assert lines[3] == ("then stopped: rank 0 (signal SIGTERM), rank 1 (signal SIGTERM), "
                        "rank 3 (signal SIGTERM)")
    assert not any(ln.startswith("hint:") for ln in lines)


def test_among_ranks_that_died_on_their_own_dict_order_decides():
    failures = {3: Failure(1, 1, 13, "first"), 1: Failure(2, 1, 11, "second")}
    text = describe_failure(failures)
    assert text.startswith("rank 3 (local rank 1, pid 13) failed with exit code 1\n  first\n")
    assert "then stopped: rank 1 (exit code 2)" in text


def test_a_single_failure_has_no_then_stopped_line():
    text = describe_failure({0: Failure(1, 0, 5, "oops")})
    assert text == "rank 0 (local rank 0, pid 5) failed with exit code 1\n  oops"


def test_a_message_dict_without_a_callstack_shows_its_message():
    text = describe_failure({0: Failure(1, 0, 5, {"message": "ValueError: bad", "extraInfo": {}})})
    assert "\n  ValueError: bad" in text


def test_sigkill_gets_the_out_of_memory_hint():
    text = describe_failure({1: Failure(KILL, 1, 7), 0: Failure(TERM, 0, 6)})
    assert text.splitlines()[0] == "rank 1 (local rank 1, pid 7) failed with signal SIGKILL"
    assert "hint: SIGKILL comes from outside the run: the kernel's out-of-memory killer" in text


def test_a_gloo_timeout_names_the_stuck_ranks_and_the_timeout():
    msg = tb("RuntimeError: [../gloo/transport/tcp/pair.cc:534] Timed out waiting 5000ms for recv operation")
    text = describe_failure({0: Failure(1, 0, 5, msg), 1: Failure(TERM, 1, 6)}, timeout_s=5)
    hint = text.splitlines()[-1]
    assert hint.startswith("hint: a collective waited longer than distributed.timeout_s (5 s) for rank 1:")


def test_an_nccl_watchdog_timeout_gets_the_same_hint():
    msg = tb("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=3, OpType=ALLREDUCE)")
    text = describe_failure({0: Failure(-signal.SIGABRT, 0, 5, msg)}, timeout_s=600)
    assert "hint: a collective waited longer than distributed.timeout_s (600 s) for another rank" in text


def test_a_full_disk_gets_its_hint():
    for message in (tb("OSError: [Errno 28] No space left on device: '/ckpt/step_10'"), "No space left on device"):
        text = describe_failure({0: Failure(1, 0, 5, message)})
        assert "hint: a file system is full" in text


def test_an_ordinary_error_gets_no_hint():
    for message in (tb("ValueError: shapes do not match"), "", {"message": "x", "extraInfo": {"py_callstack": None}}):
        text = describe_failure({0: Failure(1, 0, 5, message), 1: Failure(TERM, 1, 6)}, timeout_s=5)
        assert "hint:" not in text, message


def test_a_timeout_mentioned_by_a_stopped_rank_does_not_count():
    # only the first failure's text is read for hints
    failures = {0: Failure(1, 0, 5, tb("ValueError")), 1: Failure(TERM, 1, 6, tb("Timed out waiting 5000ms"))}
    assert "hint:" not in describe_failure(failures, timeout_s=5)


def test_a_rank_that_left_no_traceback_is_shown_by_the_end_of_its_own_log(tmp_path):
    # os._exit(3), a C-level crash: no error file, so its own last lines are all there is to go on
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "rank1.log").write_text("".join(f"line {i}\n" for i in range(30)) + "CUDA error: bad\n")
    failures = {1: Failure(3, 1, 11, "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html"),
                0: Failure(TERM, 0, 10)}
    lines = describe_failure(failures, run_dir=tmp_path).splitlines()
    assert lines[0] == "rank 1 (local rank 1, pid 11) failed with exit code 3"
    assert lines[2] == f"  last lines of its log ({tmp_path / 'logs' / 'rank1.log'}):"
    assert lines[3:15] == [f"  | line {i}" for i in range(19, 30)] + ["  | CUDA error: bad"]
    assert lines[15] == "then stopped: rank 0 (signal SIGTERM)"


def test_a_traceback_is_not_followed_by_the_log(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "rank0.log").write_text("noise\n")
    text = describe_failure({0: Failure(1, 0, 5, tb("Traceback\n  boom"))}, run_dir=tmp_path)
    assert "last lines" not in text and "noise" not in text


def test_the_failed_rank_is_named_with_its_node():
    text = describe_failure({3: Failure(1, 1, 5, "oops")}, node="node 1 (gpu07)")
    assert text.splitlines()[0] == "rank 3 (local rank 1, pid 5, node 1 (gpu07)) failed with exit code 1"


def test_without_a_traceback_its_last_stderr_lines_show_when_the_log_end_lacks_them(tmp_path):
    (tmp_path / "logs").mkdir()
    progress = "".join(f"step {i}\n" for i in range(40))  # stdout after the error pushed it out of the tail
    (tmp_path / "logs" / "rank1.log").write_text("NCCL WARN socket closed\n" + progress)
    tails = {1: ["NCCL WARN socket closed"]}
    text = describe_failure({1: Failure(-6, 1, 5)}, run_dir=tmp_path, stderr_tail=tails.get)
    assert "last lines of its stderr:\n  | NCCL WARN socket closed" in text
    assert "last lines of its log" in text and "| step 39" in text
    # stderr lines already in the log's tail are not shown twice
    (tmp_path / "logs" / "rank1.log").write_text("step 1\nNCCL WARN socket closed\n")
    text = describe_failure({1: Failure(-6, 1, 5)}, run_dir=tmp_path, stderr_tail=tails.get)
    assert "last lines of its stderr" not in text and "| NCCL WARN socket closed" in text
