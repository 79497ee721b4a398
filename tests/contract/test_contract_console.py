"""The agent's console copies rank 0's log: each attempt's lines once, even when a restarted rank 0
appends to the same file (the follower must stop the old source at the new attempt's offset)."""

from __future__ import annotations

import io
import os

from hpcgpu.contract.console import ConsoleFollower, announce


def poll(follower: ConsoleFollower) -> None:
    """One pass of the follower's loop, run here instead of in its thread: deterministic."""
    follower._switch_if_announced()
    while follower._copy():
        pass


def test_a_new_attempt_appending_to_the_same_log_is_copied_once(tmp_path):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "rank0.log"
    out = io.BytesIO()
    follower = ConsoleFollower(tmp_path, out, agent_pid=os.getpid())
    log.write_bytes(b"attempt 1 header\nstep 1\n")
    announce(tmp_path, log, 0, agent_pid=os.getpid())
    poll(follower)
    assert out.getvalue() == b"attempt 1 header\nstep 1\n"
    # the restarted rank 0 announces where its output starts, then writes its header, all before the
    # follower looks again: the old source ends at the new offset
    announce(tmp_path, log, log.stat().st_size, agent_pid=os.getpid())
    with open(log, "ab") as f:
        f.write(b"attempt 2 header\n")
    poll(follower)
    assert out.getvalue() == b"attempt 1 header\nstep 1\nattempt 2 header\n"
    follower._file.close()


def test_another_file_is_switched_to_after_the_old_one_is_drained(tmp_path):
    (tmp_path / "logs").mkdir()
    old, new = tmp_path / "logs" / "a.log", tmp_path / "logs" / "b.log"
    out = io.BytesIO()
    follower = ConsoleFollower(tmp_path, out, agent_pid=os.getpid())
    old.write_bytes(b"a1\n")
    announce(tmp_path, old, 0, agent_pid=os.getpid())
    poll(follower)
    with open(old, "ab") as f:
        f.write(b"a2\n")  # written before the switch: still copied
    new.write_bytes(b"skipped\nb1\n")
    announce(tmp_path, new, len(b"skipped\n"), agent_pid=os.getpid())
    poll(follower)
    assert out.getvalue() == b"a1\na2\nb1\n"
    follower._file.close()
