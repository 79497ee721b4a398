"""Details of hpcgpu/contract/ports.py: free_port asks the OS for port 0 on the host first (any
interface only when the host is not this machine's), an endpoint file may be published into a run
directory whose rdzv/ parents do not exist yet, and a zero timeout is a single look."""

from __future__ import annotations

import pytest

from hpcgpu.contract import ports


class RecordingSocket:
    """socket.socket stand-in: records binds; refuses addresses listed in `foreign`."""

    foreign: set = set()
    binds: list = []

    def __init__(self, *args):
        self.bound = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def bind(self, addr):
        RecordingSocket.binds.append(addr)
        if addr[0] in RecordingSocket.foreign:
            raise OSError(99, "Cannot assign requested address")
        self.bound = addr

    def getsockname(self):
        return (self.bound[0], 43210)


@pytest.fixture
def sockets(monkeypatch):
    RecordingSocket.binds = []
    RecordingSocket.foreign = set()
    monkeypatch.setattr(ports.socket, "socket", RecordingSocket)
    return RecordingSocket


def test_free_port_lets_the_os_pick_on_the_host(sockets):
    assert ports.free_port("10.1.2.3") == 43210
    assert sockets.binds == [("10.1.2.3", 0)]


def test_free_port_on_a_foreign_address_lets_the_os_pick_on_any_interface(sockets):
    sockets.foreign = {"203.0.113.7"}
    assert ports.free_port("203.0.113.7") == 43210
    assert sockets.binds == [("203.0.113.7", 0), ("", 0)]


def test_an_endpoint_is_published_into_directories_that_do_not_exist_yet(tmp_path):
    path = tmp_path / "runs" / "demo-1" / "rdzv" / "9-0.endpoint"
    ports.publish_endpoint(path, "node0:29500")
    assert path.read_text() == "node0:29500\n"


def test_a_zero_timeout_looks_once_and_does_not_sleep(tmp_path, monkeypatch):
    now, slept = [100.0], []

    def sleep(s):  # sleeping advances the fake clock; nothing waits
        slept.append(s)
        now[0] += s

    monkeypatch.setattr(ports.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(ports.time, "sleep", sleep)
    assert ports.wait_file(tmp_path / "never", 0) is None
    assert slept == []
