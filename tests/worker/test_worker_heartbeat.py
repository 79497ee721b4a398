"""A rank's side of the watchdog (worker/heartbeat.py): beats, a script's step numbering, the
answer to a report request."""

from __future__ import annotations

import json
import threading
import time

import pytest

from hpcgpu.contract import envnames
from hpcgpu.contract.heartbeat import HeartbeatFile, dump_paths
from hpcgpu.worker import heartbeat


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """A heartbeat file as the node agent makes it, and this process as local rank 0 of it."""
    hb = HeartbeatFile(tmp_path / "hb", 1)
    monkeypatch.setattr(heartbeat, "_hb", None)
    monkeypatch.setattr(heartbeat, "_step", 0)
    monkeypatch.setattr(heartbeat, "_boundaries", 0)
    monkeypatch.setattr(heartbeat, "_numbered", False)
    assert heartbeat.start(tmp_path, rank=3, local_rank=0, environ={envnames.HEARTBEAT_FILE: str(hb.path)})
    yield hb
    heartbeat.stop()


def test_without_an_agent_beats_do_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(heartbeat, "_hb", None)
    assert not heartbeat.start(tmp_path, 0, 0, environ={})
    heartbeat.beat("forward", 3)  # no error, no file
    assert list(tmp_path.iterdir()) == []


def test_a_beat_carries_the_phase_and_keeps_the_last_step(agent):
    heartbeat.beat("data", 5)
    heartbeat.beat("forward")
    slot = agent.read()[0]
    assert (slot.beats, slot.step, slot.phase) == (2, 5, "forward")


def test_a_scripts_should_stop_calls_count_its_steps_until_it_numbers_them_itself(agent):
    heartbeat.step_boundary()
    heartbeat.step_boundary()
    assert (agent.read()[0].step, agent.read()[0].phase) == (2, "collective")
    heartbeat.user_beat("user", step=40)
    heartbeat.step_boundary()  # its own numbering wins from now on
    assert agent.read()[0].step == 40


def test_an_unknown_phase_is_refused_naming_the_phases(agent):
    with pytest.raises(ValueError, match="heartbeat phase 'training': use one of start, data, forward"):
        heartbeat.user_beat("training")


def test_a_report_request_is_answered_with_every_threads_stack(agent, tmp_path):
    release = threading.Event()
    waiter = threading.Thread(target=release.wait, name="loader-like", daemon=True)
    waiter.start()
    request = agent.request_report()
    deadline = time.monotonic() + 10
    while agent.read()[0].answered != request and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    assert agent.read()[0].answered == request
    stacks_path, _ = dump_paths(tmp_path / "logs" / "hang", 3, request)
    stacks = json.loads(stacks_path.read_text())
    assert stacks[0]["main"] and stacks[0]["thread"] == "MainThread"  # the main thread comes first
    named = {t["thread"]: t for t in stacks}
    assert any(f["function"] == "wait" for f in named["loader-like"]["frames"])
    assert "hpcgpu-watchdog" not in named  # the answering thread leaves itself out
    assert oct(stacks_path.stat().st_mode & 0o777) == "0o600"
