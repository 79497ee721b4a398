"""The hang watchdog's judgement (agent/watchdog.py): progress, idleness, who is behind, the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcgpu.agent import watchdog as wd
from hpcgpu.contract.heartbeat import PHASE, RankHeartbeat, Slot
from hpcgpu.contract.runfiles import last_hang

#: a flight-recorder dump as torch 2.13's gloo writes it (trimmed): 13 entered, 12 completed
FLIGHT = json.dumps({
    "entries": [{"collective_seq_id": 12, "pg_id": 0, "profiling_name": "gloo:all_reduce", "is_p2p": False},
                {"collective_seq_id": 13, "pg_id": 0, "profiling_name": "gloo:all_reduce", "is_p2p": False}],
    "pg_status": {"0": {"last_completed_collective": "12", "last_enqueued_collective": "13",
                        "last_started_collective": "-1"}},
    "version": "2.10"})


def slot(beats=0, step=0, phase="start", pid=1):
    return Slot(beats, step, phase, 0, pid)


def watch(beats=0, work=0, phase="start"):
    return wd.RankWatch(rank=0, local_rank=0, pid=1, beats=beats, work=work, phase=phase)


# -- progress ---------------------------------------------------------------------------------------


def test_a_new_beat_is_progress():
    assert wd.progressed(watch(beats=10, work=5), slot(11, 3, "forward"), "S", 5, node_beats=True)


def test_an_armed_rank_that_only_burns_cpu_makes_no_progress():
    # a rank spinning in a loop (or in user code) after its first steps: CPU moves, beats do not
    assert not wd.progressed(watch(beats=10, work=5), slot(10, 3, "forward"), "R", 99, node_beats=True)


def test_cpu_counts_as_progress_before_the_rank_is_armed():
    # the first forward and backward (compilation, autotuning) may take long without a beat
    beats = wd.ARM_BEATS - 1
    assert wd.progressed(watch(beats=beats, work=5), slot(beats, 1, "forward"), "R", 99, node_beats=True)
    assert not wd.progressed(watch(beats=beats, work=5), slot(beats, 1, "forward"), "S", 5, node_beats=True)


@pytest.mark.parametrize("phase", ["checkpoint", "start"])
def test_cpu_or_io_counts_as_progress_in_busy_phases(phase):
    # a large checkpoint written for minutes is not a hang
    assert wd.progressed(watch(beats=50, work=5, phase=phase), slot(50, 9, phase), "D", 6, node_beats=True)
    assert not wd.progressed(watch(beats=50, work=5, phase=phase), slot(50, 9, phase), "S", 5, node_beats=True)


def test_a_stopped_process_never_progresses():
    assert not wd.progressed(watch(beats=1), slot(2, 1, "data"), "T", 0, node_beats=True)
    assert not wd.progressed(watch(beats=1), slot(1, 1, "data"), "t", 0, node_beats=False)


def test_without_any_beat_on_the_node_a_live_rank_always_progresses():
    # a script that never calls hpcgpu.dist: liveness only (an idle rank may wait on a GPU)
    assert wd.progressed(watch(), slot(), "S", 0, node_beats=False)


def test_idle_is_the_time_since_the_last_progress_of_any_live_rank():
    a, b = watch(), wd.RankWatch(rank=1, local_rank=1, pid=2)
    wd.observe([a, b], [slot(5, 1, "data"), slot(5, 1, "data", pid=2)], [("S", 1), ("S", 1)], now=100.0)
    wd.observe([a, b], [slot(6, 1, "forward"), slot(5, 1, "data", pid=2)], [("S", 1), ("S", 1)], now=101.0)
    assert wd.idle_s([a, b], 110.0) == 9.0  # rank 0 beat at 101
    b.state = ""  # gone ranks do not count
    assert wd.idle_s([b], 110.0) is None


# -- culprits ---------------------------------------------------------------------------------------


def rank(r, beats=10, state="S", flight=None):
    return {"rank": r, "beats": beats, "state": state, "flight": flight}


def fl(entered, completed):
    return {"entered": entered, "completed": completed, "waiting_in": ["gloo:all_reduce"] if entered > completed else []}


def test_a_stopped_rank_is_the_culprit_and_the_others_collective_is_named():
    names, why = wd.culprits([rank(0, flight=fl(13, 12)), rank(1, state="T")])
    assert names == [1]
    assert "stopped by a signal" in why and "wait in collective #13, which it has not entered" in why


def test_the_rank_that_entered_the_fewest_collectives_is_behind():
    names, why = wd.culprits([rank(0, flight=fl(13, 12)), rank(1, flight=fl(12, 12)), rank(2, flight=fl(13, 12))])
    assert names == [1]
    assert "entered collective #12" in why and "the others #13" in why


def test_with_equal_collectives_the_rank_with_the_fewest_beats_is_behind():
    names, why = wd.culprits([rank(0, beats=40, flight=fl(5, 5)), rank(1, beats=38, flight=fl(5, 5))])
    assert names == [1] and "heartbeat" in why


def test_beats_decide_when_a_rank_has_no_flight_record():
    assert wd.culprits([rank(0, beats=40), rank(1, beats=38, flight=fl(5, 5))])[0] == [1]


def test_when_every_rank_stands_at_the_same_place_nobody_is_blamed():
    names, why = wd.culprits([rank(0, flight=fl(5, 4)), rank(1, flight=fl(5, 4))])
    assert names == [] and "same place" in why


def test_flight_summary_reads_entered_completed_and_the_open_collectives():
    assert wd.summarize_flight(FLIGHT) == {"process_group": "0", "entered": 13, "completed": 12,
                                           "waiting_in": ["gloo:all_reduce"]}
    assert wd.summarize_flight("not json") is None
    assert wd.summarize_flight(json.dumps({"entries": []})) is None


# -- the report ---------------------------------------------------------------------------------------


def report(tmp_path, culprits=(1,)):
    ranks = [
        {"rank": 0, "node_rank": 0, "host": "n1", "pid": 10, "state": "S", "beats": 9, "step": 3, "phase": "backward",
         "idle_s": 5.0, "flight": fl(13, 12), "children": [], "files": [],
         "stacks": [{"thread": "MainThread", "main": True, "frames": [
             {"file": "torch/autograd/__init__.py", "line": 1, "function": "backward", "code": "run_backward()"}]}]},
        {"rank": 1, "node_rank": 1, "host": "n2", "pid": 11, "state": "S", "beats": 8, "step": 3, "phase": "forward",
         "idle_s": 5.2, "flight": fl(12, 12), "children": [{"pid": 12, "state": "S", "name": "pt_data_worker"}],
         "files": [],
         "stacks": [{"thread": "MainThread", "main": True, "frames": [
             {"file": "train.py", "line": 20, "function": "main", "code": "step()"},
             {"file": "train.py", "line": 31, "function": "step", "code": "time.sleep(10**6)"}]}]},
    ]
    return wd.HangReport(time="20261202-120000", stall_s=5, idle_s=5.0, culprits=list(culprits), why="behind",
                         ranks=ranks, files={"directory": str(tmp_path)})


def test_the_report_names_the_rank_its_node_and_its_innermost_frame_first(tmp_path):
    text = wd.render_markdown(report(tmp_path))
    assert "**Stalled: rank(s) 1 on node 1 (n2)**: behind." in text
    assert "collective #13 entered, #12 completed (waiting in gloo:all_reduce)" in text
    frames = text.split("## Rank 1: main thread, innermost first")[1]
    assert frames.index("train.py:31 in step: time.sleep(10**6)") < frames.index("train.py:20 in main")
    assert "pt_data_worker pid 12 S" in text
    assert "watchdog.stall_s = 5" in text


def test_the_console_summary_shows_the_culprits_frames_and_the_report_path(tmp_path):
    text = wd.console_summary(report(tmp_path), tmp_path / "hang-x.md")
    lines = text.splitlines()
    assert lines[0].startswith("hpcgpu: hang: rank(s) 1 on node 1 (n2) made no progress for 5 s")
    assert "hpcgpu:     at train.py:31 in step: time.sleep(10**6)" in lines
    assert lines[-1] == f"hpcgpu: hang report: {tmp_path / 'hang-x.md'}"
    assert not any("rank 0 on n1" in line for line in lines)  # only the culprits' lines


def test_a_report_without_culprits_says_no_rank_is_behind(tmp_path):
    text = wd.render_markdown(report(tmp_path, culprits=()))
    assert "**No rank is behind**" in text


def test_status_line_names_the_newest_reports_culprits(tmp_path):
    assert last_hang(tmp_path) is None
    for stamp, culprits in (("20261202-110000", [0]), ("20261202-120000", [1])):
        r = report(tmp_path, culprits)
        (tmp_path / f"hang-{stamp}.md").write_text("x")
        (tmp_path / f"hang-{stamp}.json").write_text(json.dumps({"culprits": r.culprits, "ranks": r.ranks}))
    assert last_hang(tmp_path) == f"rank(s) 1 on node 1 (n2); {tmp_path / 'hang-20261202-120000.md'} (2 hangs in all)"


# -- the agent's loop, over real processes --------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_watchdog_finds_a_silent_rank_after_stall_s_and_collects_the_others_stacks(tmp_path):
    clock = Clock()
    dog = wd.Watchdog(tmp_path, stall_s=30, nproc=2, node_rank=0, host="here", clock=clock)
    env = {**os.environ, **dog.environment, "PYTHONPATH": os.getcwd()}
    # rank 0 answers report requests (worker/heartbeat.py's thread); rank 1 is stopped with SIGSTOP
    code = ("import sys, time; from pathlib import Path; from hpcgpu.worker import heartbeat as hb\n"
            "hb.start(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[2]))\n"
            "[hb.beat('data', 1) for _ in range(10)]\n"
            "print('ready', flush=True); time.sleep(300)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(r)], env=env, stdout=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        workers = [(0, 0, procs[0].pid), (1, 1, procs[1].pid)]
        assert dog.check(workers) is None  # the first poll
        os.kill(procs[1].pid, 19)  # SIGSTOP
        clock.now += 29.5
        assert dog.check(workers) is None  # idle, not for stall_s yet
        clock.now += 1.0
        assert dog.check(workers) == [1]
        data = json.loads(dog.md_path.with_suffix(".json").read_text())
        by_rank = {r["rank"]: r for r in data["ranks"]}
        assert by_rank[1]["state"] == "T" and "stopped" in by_rank[1]["no_stack"]
        main = next(t for t in by_rank[0]["stacks"] if t["main"])
        assert main["frames"][-1]["file"] == "<string>"  # the child's own code, where it sleeps
        assert oct(dog.md_path.stat().st_mode & 0o777) == "0o600"
    finally:
        for p in procs:
            p.kill()
            p.wait()
        dog.close()


def test_beats_of_an_earlier_attempts_rank_do_not_count():
    # the slot still holds the pid of the rank that wrote it: the new rank (pid 2) has not opened it
    w = wd.RankWatch(rank=0, local_rank=0, pid=2)
    wd.observe([w], [slot(50, 9, "optimizer", pid=1)], [("S", 1)], now=1.0)
    assert (w.beats, w.phase) == (0, "start")


def test_a_rank_that_keeps_beating_is_never_hung(tmp_path):
    clock = Clock()
    dog = wd.Watchdog(tmp_path, stall_s=5, nproc=1, node_rank=0, host="here", clock=clock)
    hb = RankHeartbeat(dog.file.path, 0)
    workers = [(0, 0, os.getpid())]
    for step in range(20):
        hb.beat(PHASE["forward"], step)
        clock.now += 2.0
        assert dog.check(workers) is None
    dog.close()
    time.sleep(0)  # nothing left behind
    assert not dog.file.path.exists()


# -- the node agent's switch ------------------------------------------------------------------------------


def test_the_agent_watches_only_when_the_plan_asks(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from hpcgpu.agent.node import make_watchdog
    from hpcgpu.contract import envnames

    monkeypatch.delenv(envnames.HEARTBEAT_FILE, raising=False)
    node = SimpleNamespace(nnodes=1, node_rank=0, host="here", is_head=True)
    for spec in ({}, {"watchdog": {"stall_s": 0}}):  # a plan from before the watchdog, and off
        assert make_watchdog(SimpleNamespace(spec=spec, run_dir=str(tmp_path), nproc_per_node=2), node) is None
    assert envnames.HEARTBEAT_FILE not in os.environ
    dog = make_watchdog(SimpleNamespace(spec={"watchdog": {"stall_s": 9}}, run_dir=str(tmp_path), nproc_per_node=2),
                        node)
    try:
        assert dog.stall_s == 9 and os.environ[envnames.HEARTBEAT_FILE] == str(dog.file.path)
    finally:
        dog.close()


def test_an_old_torch_gets_the_flight_record_size_under_the_nccl_name(monkeypatch):
    from torch._C import _distributed_c10d as c10d

    from hpcgpu.agent.node import flight_recorder_env

    assert flight_recorder_env({"TORCH_FR_BUFFER_SIZE": "1000"}) == {}  # torch 2.8+: the new name only
    monkeypatch.delattr(c10d, "_dump_fr_trace_json")
    assert flight_recorder_env({"TORCH_FR_BUFFER_SIZE": "1000"}) == {"TORCH_NCCL_TRACE_BUFFER_SIZE": "1000"}
    assert flight_recorder_env({"TORCH_FR_BUFFER_SIZE": "1000", "TORCH_NCCL_TRACE_BUFFER_SIZE": "7"}) == {}
    assert flight_recorder_env({}) == {}


def test_heartbeat_files_of_killed_agents_are_removed_and_live_ones_kept(tmp_path):
    from hpcgpu.contract.heartbeat import HeartbeatFile, remove_stale

    # a live agent in another pid namespace: its pid means nothing here, its lock does
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from hpcgpu.contract.heartbeat import "
                               "HeartbeatFile; HeartbeatFile(sys.argv[1], 1); print('ok', flush=True); "
                               "time.sleep(60)", str(tmp_path / "hpcgpu-1-1.hb")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        killed = tmp_path / "hpcgpu-999999-2.hb"
        killed.write_bytes(b"x" * 64)  # its agent died: nobody holds the lock
        mine = HeartbeatFile(tmp_path / f"hpcgpu-{os.getpid()}-3.hb", 1)
        assert remove_stale(tmp_path) == [killed]
        assert (tmp_path / "hpcgpu-1-1.hb").exists() and mine.path.exists()
        mine.close()
    finally:
        holder.kill()
        holder.wait()
    assert remove_stale(tmp_path) == [tmp_path / "hpcgpu-1-1.hb"]  # its agent is gone now


# -- several nodes: the agents meet on a real TCPStore ------------------------------------------------------


def eventually(read, expected, timeout: float = 10.0):
    """read() once it returns expected: a TCPStore `set` is not acknowledged, so another connection may
    read the old value for a moment (the agents poll once a second; the test polls until it shows)."""
    deadline = time.monotonic() + timeout
    while (got := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return got


def test_store_peers_declare_a_hang_only_when_every_node_is_idle_and_pool_their_views():
    from datetime import timedelta

    from torch.distributed import TCPStore

    server = TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=10))
    client = TCPStore("127.0.0.1", server.port, is_master=False, timeout=timedelta(seconds=10))
    head, other = (wd.StorePeers(lambda s=s: s, "job-7", rank, 2) for rank, s in ((0, server), (1, client)))
    for p in (head, other):
        p.next_attempt()
    head.publish_idle(40.0)
    assert head.all_idle(30) is None  # node 1 has said nothing yet
    other.publish_idle(12.5)
    assert eventually(lambda: server.get(head._key("idle", 1)), b"12.5") == b"12.5"
    assert head.all_idle(30) is None  # node 1's ranks progress
    other.publish_idle(31.0)
    assert eventually(lambda: head.all_idle(30), 31.0) == 31.0
    other.publish_idle(None)  # node 1 has no rank to judge: no hang declared on its behalf
    assert eventually(lambda: head.all_idle(30), None) is None
    assert not other.hang_declared()
    head.declare_hang()
    assert eventually(other.hang_declared, True)
    assert other.gather({"node_rank": 1, "host": "b", "ranks": [{"rank": 1}]}) == [
        {"node_rank": 1, "host": "b", "ranks": [{"rank": 1}]}]
    views = head.gather({"node_rank": 0, "host": "a", "ranks": [{"rank": 0}]})
    assert [v["host"] for v in views] == ["a", "b"]
    head.share_verdict({"culprits": [1], "why": "w"})
    assert other.verdict() == {"culprits": [1], "why": "w"}
    # the next attempt starts from nothing: the earlier hang is not declared again
    for p in (head, other):
        p.next_attempt()
    assert not other.hang_declared() and head.all_idle(0) is None
    assert head._key("idle", 1) == "hpcgpu/job-7/watchdog/2/idle/1"


def test_a_node_that_never_answers_is_named_in_the_pooled_views(monkeypatch):
    from datetime import timedelta

    from torch.distributed import TCPStore

    monkeypatch.setattr(wd, "REPORT_WAIT_S", 0.2)
    server = TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=10))
    head = wd.StorePeers(lambda: server, "job-8", 0, 2)
    views = head.gather({"node_rank": 0, "host": "a", "ranks": []})
    assert views[1] == {"node_rank": 1, "host": "?", "ranks": [], "extra": {"note": "did not answer within 5 s"}}


def test_a_ranks_loader_workers_are_listed_with_their_state():
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while not wd.child_processes(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (found,) = wd.child_processes(parent.pid)
        assert (found["pid"], found["name"]) == (child, Path(sys.executable).name[:15]) and found["state"] in "SR"
        assert wd.child_processes(999_999_999) == []  # gone: nothing, no error
    finally:
        parent.kill()
        parent.wait()
        os.kill(child, 9)


# -- the report's text, pinned (tests/golden_data/hang_report_*.txt) -------------------------------------


def golden_report() -> wd.HangReport:
    """Two nodes, rank 1 on node 1 stopped, rank 0 waiting in collective #13, a loader worker, a flight
    record and stacks: every part of the report has something to show."""
    ranks = [
        {"rank": 0, "node_rank": 0, "host": "gpu-a", "pid": 4100, "state": "S", "beats": 41, "step": 12,
         "phase": "backward", "idle_s": 130.4, "flight": fl(13, 12), "children": [], "files": [],
         "stacks": [{"thread": "MainThread", "main": True, "frames": [
             {"file": "train.py", "line": 88, "function": "main", "code": "step(model, batch)"},
             {"file": "torch/_tensor.py", "line": 623, "function": "backward", "code": "torch.autograd.backward("},
             {"file": "torch/autograd/graph.py", "line": 979, "function": "_engine_run_backward", "code": ""}]},
             {"thread": "pin_memory", "main": False, "frames": []}]},
        {"rank": 1, "node_rank": 1, "host": "gpu-b", "pid": 5200, "state": "T", "beats": 40, "step": 12,
         "phase": "forward", "idle_s": 131.0, "flight": None, "files": [],
         "children": [{"pid": 5300, "state": "S", "name": "pt_data_worker"}], "stacks": None,
         "no_stack": "(no stack: the process is stopped and cannot answer)"},
    ]
    return wd.HangReport(time="20261202-120000", stall_s=120, idle_s=130.4, culprits=[1],
                         why=wd.culprits(ranks)[1], ranks=ranks,
                         nodes=[{"node_rank": 0, "host": "gpu-a"}, {"node_rank": 1, "host": "gpu-b"}],
                         files={"directory": "/runs/demo/logs/hang", "rank0": "rank0-1.stacks.json, rank0-1.flight.json"})


def test_golden_hang_report_markdown():
    from tests.helpers.golden import assert_golden

    assert_golden("hang_report.md", wd.render_markdown(golden_report()))


def test_golden_hang_report_console_summary():
    from tests.helpers.golden import assert_golden

    assert_golden("hang_report_console.txt", wd.console_summary(golden_report(), Path("/runs/demo/hang-x.md")) + "\n")


def test_flight_summary_takes_the_default_group_and_its_open_collectives_only():
    entries = [
        {"collective_seq_id": 4, "pg_id": 0, "profiling_name": "gloo:broadcast", "is_p2p": False},  # completed
        {"collective_seq_id": 5, "pg_id": 0, "profiling_name": "gloo:all_reduce", "is_p2p": False},
        {"collective_seq_id": 6, "pg_id": 0, "profiling_name": "gloo:all_gather", "is_p2p": False},
        {"collective_seq_id": 7, "pg_id": 0, "profiling_name": "gloo:barrier", "is_p2p": False},  # not entered
        {"collective_seq_id": 5, "pg_id": 0, "profiling_name": "gloo:send", "is_p2p": True},
        {"collective_seq_id": 5, "pg_id": 1, "profiling_name": "gloo:reduce", "is_p2p": False},
    ]
    status = {"0": {"last_enqueued_collective": "6", "last_completed_collective": "4"},
              "1": {"last_enqueued_collective": "9", "last_completed_collective": "9"}}
    assert wd.summarize_flight(json.dumps({"entries": entries, "pg_status": status})) == {
        "process_group": "0", "entered": 6, "completed": 4, "waiting_in": ["gloo:all_reduce", "gloo:all_gather"]}
    # no default group recorded: the first one there is
    only = {"2": {"last_enqueued_collective": "3", "last_completed_collective": "3"},
            "1": {"last_enqueued_collective": "8", "last_completed_collective": "7"}}
    assert wd.summarize_flight(json.dumps({"entries": entries, "pg_status": only})) == {
        "process_group": "1", "entered": 8, "completed": 7, "waiting_in": []}
    assert wd.summarize_flight(json.dumps({"pg_status": {"0": {}}})) == {
        "process_group": "0", "entered": -1, "completed": -1, "waiting_in": []}
