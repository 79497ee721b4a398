"""What the host knows about itself, gathered once per launch: the only impure input of a plan.

`build_plan(spec, facts, backend)` is a pure function of these; tests build HostFacts by hand.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Mapping, Optional

from hpcgpu.host.gpus import count_visible_gpus

#: the sinfo columns a Slurm plan reads: partition, nodes, GRES, CPUs, memory (MB), default and max time
SINFO_FORMAT = "%P|%D|%G|%c|%m|%L|%l"


@dataclass(frozen=True)
class HostFacts:
    """The launching machine, as a plan needs it."""

    cwd: str
    """where hpcgpu was started: relative paths in the spec mean this directory"""
    uid: int
    gid: int
    python: str
    """the interpreter running hpcgpu (it runs the node agent on the host and on shared-FS nodes)"""
    visible_gpus: Optional[int]
    """GPUs this process may use (CUDA_VISIBLE_DEVICES, NVML); None when not looked at"""
    infiniband: bool
    """/dev/infiniband exists (login and compute nodes of a cluster usually match)"""
    environ: Mapping[str, str] = field(default_factory=dict)
    """the launching environment: the user's own values win over hpcgpu's defaults"""
    partitions: tuple[str, ...] = ()
    """`sinfo -h -o SINFO_FORMAT` rows (Slurm plans only; empty when sinfo is not here)"""
    cpus: Optional[int] = None
    """CPU cores this process may run on (its affinity mask); None when not looked at"""
    max_open_files: Optional[int] = None
    """RLIMIT_NOFILE soft limit (`ulimit -n`), inherited by the node agent; None when unlimited or not looked at"""
    max_user_procs: Optional[int] = None
    """RLIMIT_NPROC soft limit (`ulimit -u`, counts the user's threads); None when unlimited, not enforced
    (root) or not looked at"""


def sinfo_rows(timeout_s: float = 20) -> tuple[str, ...]:
    """The partition rows a Slurm plan needs; () when Slurm's tools are not on PATH or do not answer."""
    if shutil.which("sinfo") is None:
        return ()
    try:
        out = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        return ()
    return tuple(row for row in out.stdout.splitlines() if row.strip()) if out.returncode == 0 else ()


def gather_facts(backend: str, environ: Optional[Mapping[str, str]] = None) -> HostFacts:
    """Look at this machine once: cwd, user, interpreter, GPUs (local runs), partitions (Slurm)."""
    environ = dict(os.environ if environ is None else environ)
    return HostFacts(
        cwd=os.getcwd(), uid=os.getuid(), gid=os.getgid(), python=sys.executable,
        # the compute nodes' GPUs cannot be seen from a login node: a Slurm plan uses the request
        visible_gpus=count_visible_gpus(environ) if backend == "local" else None,
        infiniband=os.path.isdir("/dev/infiniband"),
        environ=environ,
        partitions=sinfo_rows() if backend == "slurm" else (),
        cpus=usable_cpus(),
        max_open_files=soft_limit(resource.RLIMIT_NOFILE),
        # the kernel does not enforce RLIMIT_NPROC on root
        max_user_procs=soft_limit(resource.RLIMIT_NPROC) if os.getuid() != 0 else None,
    )


def usable_cpus() -> int:
    """The cores this process may use (taskset, cgroup cpusets), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def soft_limit(which: int) -> Optional[int]:
    """A resource's soft limit, None when unlimited."""
    soft, _ = resource.getrlimit(which)
    return None if soft == resource.RLIM_INFINITY else soft
