"""What the host knows about itself, gathered once per launch: the only impure input of a plan.

`build_plan(spec, facts, backend)` is a pure function of these; tests build HostFacts by hand.
"""

from __future__ import annotations

import os
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
    )
