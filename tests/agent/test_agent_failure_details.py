"""Details of the node agent's failure report (hpcgpu/agent/failure.py): torch elastic's error-file
shapes, the hints' wording a user acts on, and reading the end of a large rank log."""

from __future__ import annotations

import signal

from tests.helpers.elastic_fakes import Failure
from hpcgpu.agent.failure import describe_failure, log_tail


TERM = -signal.SIGTERM


def tb(text: str) -> dict:
    return {"message": "RuntimeError", "extraInfo": {"py_callstack": text, "timestamp": "0"}}


def hint_of(text: str) -> str:
    [hint] = [line for line in text.splitlines() if line.startswith("hint: ")]
    return hint


# --- torch elastic's error file shapes ------------------------------------------------------------


def test_an_error_file_without_extra_info_shows_its_message():
    text = describe_failure({0: Failure(1, 0, 5, {"message": "ValueError: bad"})})
    assert text.splitlines()[1] == "  ValueError: bad"


def test_an_error_file_with_nothing_in_it_adds_no_made_up_text():
    text = describe_failure({0: Failure(1, 0, 5, {"extraInfo": {}})})
    assert [line.strip() for line in text.splitlines()[1:]] == [""]


def test_a_traceback_keeps_its_indentation_and_drops_its_trailing_newline():
    text = describe_failure({0: Failure(1, 0, 5, tb("Traceback (most recent call last):\n  File \"t.py\"\nValueError\n"))})
    assert text.splitlines()[1:] == ["  Traceback (most recent call last):", "    File \"t.py\"", "  ValueError"]


# --- the hints ------------------------------------------------------------------------------------


def test_the_sigkill_hint_names_every_usual_sender():
    hint = hint_of(describe_failure({0: Failure(-signal.SIGKILL, 0, 5)}))
    assert "out-of-memory killer (see `dmesg`)" in hint and hint.endswith("a scheduler, or kill -9")


def test_the_timeout_hint_lists_every_stuck_rank_and_what_to_do():
    msg = tb("Timed out waiting 5000ms for recv operation")
    text = describe_failure({0: Failure(1, 0, 5, msg), 1: Failure(TERM, 1, 6), 2: Failure(TERM, 0, 7)}, timeout_s=5)
    hint = hint_of(text)
    assert "(5 s) for rank 1, rank 2: that rank is stuck (" in hint
    assert "or dead; see its log. Raise distributed.timeout_s only if" in hint
    assert hint.endswith("the work between collectives is that slow")


def test_a_full_disk_is_recognised_in_any_language():
    # strerror is translated (LC_MESSAGES); the errno is not
    msg = tb("OSError: [Errno 28] Aucun espace disponible sur le p\u00e9riph\u00e9rique: '/ckpt/step_10'")
    hint = hint_of(describe_failure({0: Failure(1, 0, 5, msg)}))
    assert hint.startswith("hint: a file system is full.")
    assert "A checkpoint appears only once it is complete, so the previous one is intact" in hint
    assert "checkpoint.dir" in hint and hint.endswith("run again to resume")


# --- the end of a rank's log ----------------------------------------------------------------------


def test_the_tail_of_a_short_log_starts_with_its_whole_first_line(tmp_path):
    log = tmp_path / "rank0.log"
    log.write_text("first line\nsecond\n")
    assert log_tail(log, 12) == ["first line", "second"]


def test_a_large_log_is_read_only_from_its_last_64_kib(tmp_path):
    # 2048 lines of 64 bytes: the last 64 KiB are exactly the last 1024 whole lines
    log = tmp_path / "rank0.log"
    log.write_text("".join(f"{i:063d}\n" for i in range(2048)))
    got = log_tail(log, 5000)
    assert got == [f"{i:063d}" for i in range(1024, 2048)]
    assert log_tail(log, 3) == [f"{i:063d}" for i in (2045, 2046, 2047)]


def test_bytes_that_are_not_utf8_do_not_hide_the_log(tmp_path):
    log = tmp_path / "rank0.log"
    log.write_bytes(b"ok\n\xff\xfe broken\nCUDA error\n")
    assert log_tail(log, 12) == ["ok", "\ufffd\ufffd broken", "CUDA error"]


def test_a_missing_log_gives_no_lines(tmp_path):
    assert log_tail(tmp_path / "nope.log", 12) == []
