"""Which address and interface a node of a multi-node run uses. Standard library only.

A node's ranks must talk to the other nodes over an interface those nodes can reach. gloo, left
alone, binds the address this machine's host name resolves to, and torch elastic advertises the
head's fully qualified host name as MASTER_ADDR: both fail wherever the host name resolves to a
loopback address (Debian's 127.0.1.1 line in /etc/hosts) or to an interface the other nodes cannot
reach, and in network namespaces, which share one host name. The rule here asks the routing table
instead: the address this node would use to reach the rendezvous endpoint (a UDP connect() sends
nothing; getsockname() then names the source address the kernel chose), and the interface holding
that address. The head, whose endpoint is its own address, gets that address and its interface too
(not `lo`, through which the kernel would route a packet to itself). An endpoint that resolves to
a loopback address says nothing about the network, and leaves torch's own choice in place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import socket
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from hpcgpu.contract.errors import UserError

#: the variables the choice sets for the ranks (unless the user set them)
IFNAME_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


@dataclass(frozen=True)
class NodeAddress:
    """This node's side of the network a multi-node run uses."""

    addr: Optional[str]
    """the address the other nodes reach this node at (torch elastic's local_addr; MASTER_ADDR on the
    head); None: not known here (the endpoint is a loopback address), torch decides"""
    ifname: Optional[str]
    """the interface holding addr (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME); None when none holds it"""
    reason: str
    endpoint_addr: str = ""
    """the address the endpoint's host resolved to on this node"""

    def is_endpoint_here(self) -> bool:
        """Whether the endpoint is this node (the head must be: its store listens there)."""
        return self.addr is None or self.addr == self.endpoint_addr


def choose_node_address(endpoint: str, endpoint_addr: str, source_addr: str,
                        interfaces: Mapping[str, Sequence[str]]) -> NodeAddress:
    """The address and interface for this node, from the endpoint (host:port as given), the address
    the endpoint's host resolved to, the source address the kernel picks to reach it, and this
    node's interfaces (name -> IPv4 addresses). Pure."""
    holders = [name for name, addrs in interfaces.items() if source_addr in addrs]
    # an address can sit on several interfaces (rare); prefer a real one over lo
    ifname = sorted(holders, key=lambda n: (n == "lo", n))[0] if holders else None
    via = f"the address this node uses to reach the rendezvous endpoint {endpoint}"
    if endpoint_addr != endpoint.rsplit(":", 1)[0]:
        via += f" ({endpoint_addr})"
    if ipaddress.ip_address(source_addr).is_loopback:
        # e.g. the head's own name, mapped to 127.0.1.1 in /etc/hosts: the other nodes may still
        # reach it (through DNS) on an interface this node cannot name, so torch's defaults stay
        return NodeAddress(addr=None, ifname=None, endpoint_addr=endpoint_addr, reason=(
            f"{via}: a loopback address, so which interface the other nodes reach this node on is not known "
            "here; left to torch (the host name's address) and NCCL. If nodes on other machines cannot "
            "connect, give --rdzv-endpoint as the head's network address (Slurm: make the node names resolve "
            "to their network addresses), or set GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME"))
    if ifname is None:
        reason = f"{source_addr}: {via}; no interface of this node lists it, so GLOO/NCCL_SOCKET_IFNAME stay unset"
    else:
        reason = f"{source_addr} on {ifname}: {via}, and the interface holding it"
    return NodeAddress(addr=source_addr, ifname=ifname, reason=reason, endpoint_addr=endpoint_addr)


def ifname_defaults(choice: NodeAddress, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The interface variables to set for the ranks (those the user left unset), and one note per
    variable saying what was set or kept."""
    added, notes = {}, []
    for name in IFNAME_VARIABLES:
        if environ.get(name):
            notes.append(f"{name}={environ[name]} (yours, kept)")
        elif choice.ifname:
            added[name] = choice.ifname
            notes.append(f"{name}={choice.ifname}")
    return added, notes


# ---------------------------------------------------------------- the facts, read from this node


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); UserError naming the endpoint when malformed."""
    host, sep, port = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"rendezvous endpoint {endpoint!r} is not HOST:PORT (a port from 1 to 65535)",
                        hint="e.g. --rdzv-endpoint node1:29400 or 10.0.0.1:29400")
    return host, int(port)


def node_address(endpoint: str) -> NodeAddress:
    """choose_node_address with this node's facts: resolve the endpoint, ask the kernel for the
    source address toward it, list the interfaces. UserError when the endpoint is unreachable."""
    host, port = split_endpoint(endpoint)
    try:
        endpoint_addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as e:
        raise UserError(f"the rendezvous endpoint's host {host!r} does not resolve to an IPv4 address on this "
                        f"node: {e.strerror}", hint="give the head node's address, e.g. 10.0.0.1:29400") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((endpoint_addr, port))  # UDP: picks a route and a source address, sends nothing
        except OSError as e:
            raise UserError(f"no route from this node to the rendezvous endpoint {endpoint} ({endpoint_addr}): "
                            f"{e.strerror}", hint="check the address and this node's network") from None
        source = probe.getsockname()[0]
    return choose_node_address(endpoint, endpoint_addr, source, ipv4_interfaces())


class _Sockaddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 14)]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [("next", ctypes.POINTER(_Ifaddrs)), ("name", ctypes.c_char_p), ("flags", ctypes.c_uint),
                     ("addr", ctypes.POINTER(_Sockaddr)), ("netmask", ctypes.POINTER(_Sockaddr)),
                     ("ifu", ctypes.POINTER(_Sockaddr)), ("data", ctypes.c_void_p)]


def ipv4_interfaces() -> dict[str, list[str]]:
    """This node's interfaces and their IPv4 addresses (secondary ones included), from getifaddrs(3);
    {} where libc has none."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if not hasattr(libc, "getifaddrs"):
        return {}
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return {}
    out: dict[str, list[str]] = {}
    try:
        node = head
        while node:
            entry = node.contents
            if entry.addr and entry.addr.contents.family == socket.AF_INET:
                # sockaddr_in: 2 bytes port, then the 4 address bytes
                addr = socket.inet_ntoa(bytes(entry.addr.contents.data[2:6]))
                out.setdefault(entry.name.decode(errors="replace"), []).append(addr)
            node = entry.next
    finally:
        libc.freeifaddrs(head)
    return out
