"""Two "hosts" on this machine: network namespaces joined by a veth pair (a pytest plugin, registered
by tests/conftest.py). Multi-node code run in them crosses a real interface with its own address
instead of 127.0.0.1; the namespaces share the file system and the host name, as nodes of a cluster
share a file system but never a network stack.

The fixture `netns_pair` creates hpcgpu-t<pid>-a (10.231.10.1/24 on veth hg<pid>a) and
hpcgpu-t<pid>-b (10.231.10.2/24 on hg<pid>b), loopback up in both, and always deletes them (and
ends the processes still inside, which only this test started). Needs root and iproute2: tests
skip with the reason otherwise, unless HPCGPU_REQUIRE_NETNS=1 (`make test`), which fails them, so a
machine that cannot run them never passes as "all skipped". The addresses never leave this machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Iterator, Sequence

import pytest

SUBNET = "10.231.10"


@dataclass(frozen=True)
class Namespace:
    """One end: the namespace, its interface and its address."""

    name: str
    ifname: str
    addr: str

    def argv(self, *command: str) -> list[str]:
        """`ip netns exec NAME command...`: the command runs in this namespace (no shell)."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*command), capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class NetnsPair:
    head: Namespace
    other: Namespace


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def netns_problem() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("ss") is None:
        return "iproute2 (ip, ss) is not installed"
    probe = f"hpcgpu-t{os.getpid()}-probe"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


def _end_processes(namespace: str) -> None:
    """SIGKILL what still runs inside the namespace (processes this test started, by pid)."""
    pids = _ip("netns", "pids", namespace).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _delete(names: Sequence[str]) -> None:
    for name in names:
        _end_processes(name)
        _ip("netns", "del", name)  # takes its veth end, and so the pair, with it


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr.strip()}")


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """Two namespaces joined by a veth pair; deleted afterwards whatever happened."""
    problem = netns_problem()
    if problem is not None:
        message = f"cannot create network namespaces ({problem})"
        if os.environ.get("HPCGPU_REQUIRE_NETNS") == "1":
            pytest.fail(message + " [HPCGPU_REQUIRE_NETNS=1]", pytrace=False)
        pytest.skip(message)
    pid = os.getpid()
    head = Namespace(f"hpcgpu-t{pid}-a", f"hg{pid}a", f"{SUBNET}.1")
    other = Namespace(f"hpcgpu-t{pid}-b", f"hg{pid}b", f"{SUBNET}.2")
    _delete([head.name, other.name])  # left over by a killed run with this pid
    try:
        for ns in (head, other):
            _check(_ip("netns", "add", ns.name), f"ip netns add {ns.name}")
        _check(_ip("link", "add", head.ifname, "type", "veth", "peer", "name", other.ifname), "ip link add veth")
        for ns in (head, other):
            _check(_ip("link", "set", ns.ifname, "netns", ns.name), f"moving {ns.ifname} into {ns.name}")
            _check(_ip("-n", ns.name, "addr", "add", f"{ns.addr}/24", "dev", ns.ifname), f"address on {ns.ifname}")
            _check(_ip("-n", ns.name, "link", "set", ns.ifname, "up"), f"{ns.ifname} up")
            _check(_ip("-n", ns.name, "link", "set", "lo", "up"), f"lo up in {ns.name}")
        yield NetnsPair(head, other)
    finally:
        _delete([head.name, other.name])


def tcp_sockets(ns: Namespace, listening: bool) -> list[tuple[str, str]]:
    """(local, peer) address:port pairs of the namespace's TCP sockets: listening, or established."""
    out = ns.run("ss", "-Htn", *(["-l"] if listening else ["state", "established"]))
    _check(out, f"ss in {ns.name}")
    rows = []
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            rows.append((_ipv4(fields[-2]), _ipv4(fields[-1])))  # ... Local-Address:Port Peer-Address:Port
    return rows


def _ipv4(address: str) -> str:
    """`[::ffff:10.0.0.1]:80` (an IPv6 socket speaking IPv4, as TCPStore's are) -> `10.0.0.1:80`."""
    return address.replace("[::ffff:", "").replace("]:", ":")
