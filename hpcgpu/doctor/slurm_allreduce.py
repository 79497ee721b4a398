"""`hpcgpu doctor --slurm`: the all-reduce across 2 Slurm nodes, one task (one torchrun) per node.

The doctor side runs `srun -N2 --ntasks-per-node=1 python -m hpcgpu.doctor.slurm_allreduce`; on
each node `main()` below works out the c10d rendezvous (first node of the step, a port derived
from the job and step ids so every node computes the same one) and execs torchrun.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping

from hpcgpu.doctor.checks_env import expand_nodelist
from hpcgpu.doctor.functional import (GLOO_ITERS, GLOO_SIZES, NCCL_ITERS, NCCL_SIZES, run_launch,
                                      summarize_allreduce, worker_argv)
from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import CheckResult, check, fail, warn

NODES = 2
PORT_BASE, PORT_SPAN = 20000, 20000
SRUN_HINT = ("the all-reduce between nodes failed: check that node names resolve on every node, "
             "that the nodes reach each other on TCP ports 20000-39999, NCCL_SOCKET_IFNAME, and "
             "InfiniBand (ibstat); partition/account/GPUs go in SLURM_PARTITION, SLURM_ACCOUNT, "
             "SLURM_GPUS_PER_NODE")


def srun_argv(nproc: int | None) -> list[str]:
    """The srun command: 2 nodes, one task each; works inside an allocation or makes one."""
    return ["srun", f"--nodes={NODES}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            "--job-name=hpcgpu-doctor", sys.executable, "-m", "hpcgpu.doctor.slurm_allreduce",
            f"--nproc-per-node={nproc or 0}"]


@check("allreduce_slurm")
def check_allreduce_slurm(p: Probe) -> CheckResult:
    """A real all-reduce across 2 Slurm nodes (NCCL on GPUs, gloo otherwise)."""
    if not p.which("srun"):
        return fail("srun not on PATH", "run --slurm on a Slurm login or compute node")
    res, output, failure = run_launch(p, srun_argv(p.nproc), None)
    if failure is not None:
        return fail(failure.detail, SRUN_HINT, failure.data)
    result = summarize_allreduce(res, output)
    if res["nodes"] < NODES:
        return warn(f"{result.detail}: ranks ran on {res['nodes']} node(s), not {NODES}",
                    "ask for nodes in a partition with at least 2 of them", result.data)
    return result


def rendezvous_port(job_id: str, step_id: str) -> int:
    """The same port on every node of a step, different between steps and jobs."""
    return PORT_BASE + (int(job_id) * 8 + int(step_id)) % PORT_SPAN


def node_command(env: Mapping[str, str], nproc: int) -> list[str]:
    """torchrun for this node of the step, with the rendezvous on the step's first node."""
    hosts = expand_nodelist(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
    head, me = hosts[0], env.get("SLURMD_NODENAME", "")
    port = rendezvous_port(env["SLURM_JOB_ID"], env.get("SLURM_STEP_ID", "0"))
    gpus = int(env.get("SLURM_GPUS_ON_NODE") or 0)
    sizes, iters = (NCCL_SIZES, NCCL_ITERS) if gpus else (GLOO_SIZES, GLOO_ITERS)
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(hosts)}",
            f"--nproc-per-node={nproc or gpus or 1}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={head}:{port}", f"--rdzv-id=hpcgpu-doctor-{env['SLURM_JOB_ID']}",
            # explicit: with several slurmd on one machine every node would claim the store
            f"--rdzv-conf=is_host={int(me == head)}", "--max-restarts=0",
            *worker_argv("-", "auto", sizes, iters)]


def main(argv: list[str] | None = None) -> None:
    """Node side: exec torchrun for this node."""
    ap = argparse.ArgumentParser(prog="python -m hpcgpu.doctor.slurm_allreduce")
    ap.add_argument("--nproc-per-node", type=int, default=0, help="0: GPUs on the node, or 1")
    args = ap.parse_args(argv)
    cmd = node_command(os.environ, args.nproc_per_node)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
