"""Run-dir files (result.json, atomic private JSON, private dirs), ports and endpoint files, and the
restart count a rank reports."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading

import pytest

from hpcgpu.contract import ports
from hpcgpu.contract.node import attempt_restarts
from hpcgpu.contract.runfiles import (RESULT_FILE, make_private_dir, read_json, read_result, write_json_atomic,
                                      write_result)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------- result.json


def test_write_result_then_read_it(tmp_path):
    write_result(tmp_path, 75)
    result = read_result(tmp_path)
    assert result["exit_code"] == 75 and isinstance(result["ended"], float)
    assert (tmp_path / RESULT_FILE).is_file()


def test_a_result_older_than_since_is_ignored(tmp_path):
    write_json_atomic(tmp_path / RESULT_FILE, {"exit_code": 0, "ended": 1000.0})
    assert read_result(tmp_path, since=999.0)["exit_code"] == 0
    assert read_result(tmp_path, since=1000.0)["exit_code"] == 0  # written at the very start still counts
    assert read_result(tmp_path, since=1000.5) is None
    # a result without a time is as old as can be
    write_json_atomic(tmp_path / RESULT_FILE, {"exit_code": 1})
    assert read_result(tmp_path) == {"exit_code": 1}
    assert read_result(tmp_path, since=1.0) is None


def test_no_or_broken_result_reads_as_none(tmp_path):
    assert read_result(tmp_path) is None
    (tmp_path / RESULT_FILE).write_text("{half")
    assert read_result(tmp_path) is None and read_json(tmp_path / RESULT_FILE) is None


def test_write_json_atomic_leaves_a_private_file_and_no_temp_files(tmp_path):
    target = tmp_path / "run.json"
    target.write_text("{}")
    os.chmod(target, 0o644)  # an older, readable file is replaced by a private one
    old = os.umask(0)  # even a permissive umask gives 0600
    try:
        write_json_atomic(target, {"b": 1, "a": [1, 2]})
    finally:
        os.umask(old)
    assert mode(target) == 0o600
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_make_private_dir_creates_parents_and_tightens_an_existing_dir(tmp_path):
    nested = tmp_path / "a" / "b"
    assert make_private_dir(nested) == nested
    assert nested.is_dir() and mode(nested) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    make_private_dir(loose)
    assert mode(loose) == 0o700


# ---------------------------------------------------------------- ports and endpoint files


def test_free_port_returns_a_port_that_can_be_bound():
    port = ports.free_port("127.0.0.1")
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_free_port_on_an_address_this_host_does_not_own_falls_back_to_any_interface():
    port = ports.free_port("203.0.113.7")  # TEST-NET-3: never this machine's
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("", port))


def test_publish_endpoint_writes_one_line_and_no_temp_file(tmp_path):
    path = tmp_path / "rdzv" / "9-0.endpoint"
    ports.publish_endpoint(path, "node0:29500")
    assert path.read_text() == "node0:29500\n"
    assert [p.name for p in path.parent.iterdir()] == ["9-0.endpoint"]
    assert ports.wait_file(path, 0) == "node0:29500"


def test_wait_file_reads_a_file_that_appears_later(tmp_path):
    path = tmp_path / "rdzv" / "late.endpoint"
    writer = threading.Timer(0.3, ports.publish_endpoint, args=(path, "head:1234"))
    writer.start()
    try:
        assert ports.wait_file(path, 60) == "head:1234"
    finally:
        writer.cancel()


class FakeClock:
    """time.monotonic and time.sleep for ports.wait_file: sleeping advances the clock, nothing waits."""

    def __init__(self, on_sleep=None):
        self.now = 100.0
        self.slept = 0.0
        self.on_sleep = on_sleep

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.now += s
        self.slept += s
        if self.on_sleep:
            self.on_sleep(self)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(ports.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(ports.time, "sleep", fake.sleep)
    return fake


def test_wait_file_gives_up_after_its_timeout(tmp_path, clock):
    assert ports.wait_file(tmp_path / "never", 5.0) is None
    # it waited the whole timeout, and not (much) more: one poll interval at most
    assert 5.0 <= clock.slept <= 5.2 + 1e-9


def test_wait_file_does_not_return_an_empty_file(tmp_path, clock):
    path = tmp_path / "empty.endpoint"
    path.write_text("")
    assert ports.wait_file(path, 2.0) is None
    path.write_text("  \n")
    assert ports.wait_file(path, 2.0) is None
    assert clock.slept >= 4.0


def test_wait_file_returns_once_the_empty_file_is_filled(tmp_path, monkeypatch):
    path = tmp_path / "filled.endpoint"
    path.write_text("")

    def fill(clock):
        if clock.slept >= 1.0 and not path.read_text():
            path.write_text("h:1\n")

    fake = FakeClock(on_sleep=fill)
    monkeypatch.setattr(ports.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(ports.time, "sleep", fake.sleep)
    assert ports.wait_file(path, 30.0) == "h:1"
    assert fake.slept < 2.0


# ---------------------------------------------------------------- restart count


@pytest.mark.parametrize("environ, expected", [
    ({}, 0),
    ({"HPCGPU_JOB_RESTARTS": "2"}, 2),
    ({"TORCHELASTIC_RESTART_COUNT": "3"}, 3),
    ({"HPCGPU_JOB_RESTARTS": "2", "TORCHELASTIC_RESTART_COUNT": "3"}, 5),
    ({"HPCGPU_JOB_RESTARTS": "", "TORCHELASTIC_RESTART_COUNT": "1"}, 1),
    ({"HPCGPU_JOB_RESTARTS": "4", "TORCHELASTIC_RESTART_COUNT": ""}, 4),
    ({"HPCGPU_JOB_RESTARTS": "", "TORCHELASTIC_RESTART_COUNT": ""}, 0),
])
def test_attempt_restarts_adds_the_jobs_and_torch_elastics(environ, expected):
    assert attempt_restarts(environ) == expected
