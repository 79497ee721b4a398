"""Host checks: /dev/shm, locked memory, InfiniBand, hostname, a rendezvous port, the checkpoint dir."""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path

from hpcgpu.doctor.checks_env import expand_nodelist
from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import CheckResult, Skip, check, fail, human_bytes, ok, warn

GiB, MiB = 1 << 30, 1 << 20
SHM_FAIL, SHM_WARN = 256 * MiB, 1 * GiB
MEMLOCK_FAIL = 64 * MiB
CKPT_FAIL, CKPT_WARN = 1 * GiB, 10 * GiB
SHM_HINT = ("DataLoader workers and NCCL's shared-memory transport live in /dev/shm: in docker "
            "use --ipc=host or --shm-size=16g (podman the same; Kubernetes: an emptyDir with "
            "medium: Memory); on a host, enlarge the tmpfs (mount -o remount,size=16G /dev/shm)")


@check("shm")
def check_shm(p: Probe) -> CheckResult:
    """/dev/shm size: docker's 64 MiB default breaks DataLoader workers and NCCL's SHM transport."""
    try:
        total, _, free = p.disk_usage(str(p.path("/dev/shm")))
    except FileNotFoundError:
        return fail("/dev/shm does not exist", SHM_HINT)
    detail = f"/dev/shm {human_bytes(total)} ({human_bytes(free)} free)"
    data = {"total": total, "free": free}
    if total < SHM_FAIL:
        return fail(f"{detail}: too small for multi-process training", SHM_HINT, data)
    if total < SHM_WARN or free < SHM_WARN:
        return warn(f"{detail}: under 1 GiB", SHM_HINT, data)
    return ok(detail, data)


def infiniband_devices(p: Probe) -> list[str]:
    """Names under /sys/class/infiniband (InfiniBand HCAs and RoCE NICs)."""
    base = p.path("/sys/class/infiniband")
    return sorted(d.name for d in base.iterdir()) if base.is_dir() else []


@check("memlock")
def check_memlock(p: Probe) -> CheckResult:
    """ulimit -l: RDMA (InfiniBand/RoCE) pins buffers and fails with a small locked-memory limit."""
    limit, ib = p.memlock(), infiniband_devices(p)
    shown = "unlimited" if limit < 0 else human_bytes(limit)
    data = {"bytes": limit, "infiniband": ib}
    if limit < 0:
        return ok(f"ulimit -l {shown}", data)
    if not ib:
        return ok(f"ulimit -l {shown} (matters only with InfiniBand/RoCE; none here)", data)
    hint = ("set `* soft memlock unlimited` and `* hard memlock unlimited` in "
            "/etc/security/limits.conf; under Slurm also PropagateResourceLimitsExcept=MEMLOCK "
            "and LimitMEMLOCK=infinity for slurmd; in docker --ulimit memlock=-1")
    if limit < MEMLOCK_FAIL:
        return fail(f"ulimit -l {shown} with InfiniBand present: NCCL cannot register buffers",
                    hint, data)
    return warn(f"ulimit -l {shown} with InfiniBand present (unlimited is safest)", hint, data)


def _port_info(port: Path) -> dict[str, str]:
    def read(name: str) -> str:
        f = port / name
        return f.read_text().strip() if f.is_file() else "?"
    return {"port": port.name, "state": read("state").split(":")[-1].strip(),
            "link_layer": read("link_layer"), "rate": read("rate")}


@check("infiniband")
def check_infiniband(p: Probe) -> CheckResult:
    """InfiniBand/RoCE devices and their port states; without them NCCL uses TCP between nodes."""
    devices = infiniband_devices(p)
    if not devices:
        raise Skip("no InfiniBand/RoCE device: NCCL uses TCP sockets between nodes")
    ports = {d: [_port_info(x) for x in sorted(p.path(f"/sys/class/infiniband/{d}/ports").glob("*"))]
             for d in devices}
    active = [f"{d}/{x['port']} {x['rate']} ({x['link_layer']})"
              for d, xs in ports.items() for x in xs if x["state"] == "ACTIVE"]
    if not active:
        return warn(f"{', '.join(devices)}: no port ACTIVE",
                    "check cables and the subnet manager (ibstat); NCCL falls back to TCP",
                    {"devices": ports})
    return ok(f"active: {', '.join(active)}", {"devices": ports})


def _other_nodes_remote(p: Probe) -> bool:
    """In a multi-node job, whether some node of it is another machine (not loopback here)."""
    if int(p.env.get("SLURM_JOB_NUM_NODES") or p.env.get("SLURM_NNODES") or 1) < 2:
        return False
    for node in expand_nodelist(p.env.get("SLURM_JOB_NODELIST", "")) or ["?"]:
        try:
            if not ipaddress.ip_address(p.resolve(node)).is_loopback:
                return True
        except (OSError, ValueError):
            return True
    return False  # a one-machine dev cluster: every node name maps to loopback


@check("hostname")
def check_hostname(p: Probe) -> CheckResult:
    """This host's name resolves; on several nodes it must not resolve to loopback."""
    name = p.hostname()
    try:
        addr = p.resolve(name)
    except OSError as e:
        return fail(f"{name!r} does not resolve: {e}",
                    "add the hostname to /etc/hosts or DNS; rendezvous addresses use it")
    data = {"hostname": name, "address": addr}
    if ipaddress.ip_address(addr).is_loopback:
        if _other_nodes_remote(p):
            return warn(f"{name} -> {addr} (loopback) in a multi-node job: other nodes cannot "
                        "reach a rendezvous here", "map the hostname to the node's network "
                        "address in /etc/hosts or DNS", data)
        return ok(f"{name} -> {addr} (loopback: fine on one machine)", data)
    return ok(f"{name} -> {addr}", data)


@check("rendezvous_port")
def check_rendezvous_port(p: Probe) -> CheckResult:
    """A free TCP port can be opened for the rendezvous; a preset MASTER_PORT is not taken."""
    try:
        addr = p.resolve(p.hostname())
    except OSError:
        addr = "127.0.0.1"
    try:
        port = p.bind(addr, 0)
    except OSError as e:
        return fail(f"cannot listen on {addr}: {e}", "check the firewall and that the hostname's "
                    "address belongs to this machine")
    data = {"address": addr, "free_port": port}
    preset = p.env.get("MASTER_PORT")
    if preset:
        try:
            p.bind("", int(preset))
        except OSError as e:
            return warn(f"MASTER_PORT={preset} is taken here ({e.strerror or e})",
                        "unset MASTER_PORT: hpcgpu picks a free port itself", data)
    return ok(f"can listen on {addr}:{port}" + (f"; MASTER_PORT={preset} free" if preset else ""),
              data)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@check("checkpoint_dir")
def check_checkpoint_dir(p: Probe) -> CheckResult:
    """The checkpoint directory (or its nearest existing parent) is writable and has room."""
    target = Path(p.checkpoint_dir)
    base = _nearest_existing(target)
    if not base.is_dir():
        return fail(f"{base} exists but is not a directory", "choose another --checkpoint-dir")
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=".hpcgpu-doctor-"):
            pass
    except OSError as e:
        return fail(f"cannot write in {base}: {e.strerror or e}",
                    "choose a writable --checkpoint-dir (a shared file system on clusters)")
    free = p.disk_usage(str(base)).free
    where = str(target) if base == target.absolute() else f"{target} (to be created in {base})"
    detail, data = f"{where}: writable, {human_bytes(free)} free", {"path": str(base), "free": free}
    hint = "free space or point --checkpoint-dir at a larger file system"
    if free < CKPT_FAIL:
        return fail(detail, hint, data)
    if free < CKPT_WARN:
        return warn(f"{detail} (a large model's checkpoints need more)", hint, data)
    return ok(detail, data)
