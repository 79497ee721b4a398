"""The heartbeat file between a node agent and its ranks (contract/heartbeat.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from hpcgpu.contract import envnames
from hpcgpu.contract.heartbeat import (PHASE, PHASES, HeartbeatFile, RankHeartbeat, dump_paths, open_rank_heartbeat,
                                       size_for)


def test_a_rank_beat_is_read_by_the_agent_with_its_step_phase_and_pid(tmp_path):
    agent = HeartbeatFile(tmp_path / "hb", 2)
    rank1 = RankHeartbeat(tmp_path / "hb", 1)
    rank1.beat(PHASE["backward"], 7)
    rank1.beat(PHASE["optimizer"], 7)
    slots = agent.read()
    assert slots[0].beats == 0 and slots[0].phase == "start"
    assert (slots[1].beats, slots[1].step, slots[1].phase, slots[1].pid) == (2, 7, "optimizer", os.getpid())


def test_beats_from_another_process_are_seen_without_any_write_to_disk(tmp_path):
    agent = HeartbeatFile(tmp_path / "hb", 1)
    code = ("import sys; from hpcgpu.contract.heartbeat import RankHeartbeat, PHASE\n"
            "hb = RankHeartbeat(sys.argv[1], 0)\n"
            "[hb.beat(PHASE['data'], s) for s in range(1, 101)]\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "hb")], check=True)
    slot = agent.read()[0]
    assert (slot.beats, slot.step, slot.phase) == (100, 100, "data")


def test_the_file_is_private_and_sized_for_its_slots(tmp_path):
    agent = HeartbeatFile(tmp_path / "hb", 3)
    assert stat.S_IMODE(os.stat(agent.path).st_mode) == 0o600
    assert os.path.getsize(agent.path) == size_for(3) == 16 + 3 * 32
    agent.close()
    assert not agent.path.exists()


def test_a_report_request_is_seen_by_the_rank_and_its_answer_by_the_agent(tmp_path):
    agent = HeartbeatFile(tmp_path / "hb", 2)
    rank0 = RankHeartbeat(tmp_path / "hb", 0)
    assert rank0.report_request() == 0
    assert agent.request_report() == 1
    assert agent.request_report() == 2
    assert rank0.report_request() == 2
    rank0.answer(2)
    assert [s.answered for s in agent.read()] == [2, 0]


def test_a_restarted_rank_starts_its_slot_afresh_and_sees_the_current_request(tmp_path):
    agent = HeartbeatFile(tmp_path / "hb", 1)
    RankHeartbeat(tmp_path / "hb", 0).beat(PHASE["data"], 3)
    agent.request_report()
    again = RankHeartbeat(tmp_path / "hb", 0)  # the next attempt's rank
    assert (agent.read()[0].beats, agent.read()[0].answered) == (0, 1)  # no request pending for it
    assert again.report_request() == 1


@pytest.mark.parametrize("local_rank", [-1, 2])
def test_a_slot_outside_the_file_is_refused(tmp_path, local_rank):
    HeartbeatFile(tmp_path / "hb", 2)
    with pytest.raises(ValueError, match=f"local rank {local_rank}"):
        RankHeartbeat(tmp_path / "hb", local_rank)


def test_a_file_that_is_not_a_heartbeat_file_is_refused(tmp_path):
    (tmp_path / "other").write_bytes(b"x" * 64)
    with pytest.raises(ValueError, match="not a heartbeat file"):
        RankHeartbeat(tmp_path / "other", 0)


def test_a_rank_without_a_watching_agent_gets_no_heartbeat(tmp_path):
    assert open_rank_heartbeat({}, 0) is None
    assert open_rank_heartbeat({envnames.HEARTBEAT_FILE: str(tmp_path / "missing")}, 0) is None
    HeartbeatFile(tmp_path / "hb", 1)
    assert open_rank_heartbeat({envnames.HEARTBEAT_FILE: str(tmp_path / "hb")}, 0) is not None


def test_phases_are_numbered_in_the_documented_order():
    assert PHASES == ("start", "data", "forward", "backward", "optimizer", "collective", "checkpoint", "eval", "user")
    assert PHASE["start"] == 0  # a zeroed slot reads as "start"


def test_dump_paths_name_the_rank_and_the_request(tmp_path):
    stacks, flight = dump_paths(tmp_path, 3, 2)
    assert (stacks.name, flight.name) == ("rank3-2.stacks.json", "rank3-2.flight.json")
