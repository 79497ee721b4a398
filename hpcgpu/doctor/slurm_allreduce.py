"""`hpcgpu doctor --slurm [--nodes N]`: the all-reduce across Slurm nodes, one task (one torchrun) per node.

The doctor side runs `srun -N<N> --ntasks-per-node=1 python -m hpcgpu.doctor.slurm_allreduce`; on
each node `main()` below works out the c10d rendezvous (first node of the step, a port derived
from the job and step ids so every node computes the same one) and execs torchrun. With 3 or more
nodes it then tests pairs of them to name a node that fails or crawls (doctor/bad_nodes.py), so it
can be excluded before a job wastes an allocation on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from typing import Mapping, Sequence

from hpcgpu.doctor.checks_env import expand_nodelist
from hpcgpu.doctor.bad_nodes import locate
from hpcgpu.doctor.functional import (GLOO_ITERS, GLOO_SIZES, NCCL_ITERS, NCCL_SIZES, child_env, run_launch,
                                      summarize_allreduce, worker_argv)
from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import CheckResult, check, fail, warn

NODES = 2
PORT_BASE, PORT_SPAN = 20000, 20000
SRUN_HINT = ("the all-reduce between nodes failed: check that node names resolve on every node, "
             "that the nodes reach each other on TCP ports 20000-39999, NCCL_SOCKET_IFNAME, and "
             "InfiniBand (ibstat); partition/account/GPUs go in SLURM_PARTITION, SLURM_ACCOUNT, "
             "SLURM_GPUS_PER_NODE")


def srun_argv(nproc: int | None, nodes: int = NODES, nodelist: Sequence[str] = ()) -> list[str]:
    """The srun command: `nodes` nodes (these, if given), one task each; works inside an allocation
    or makes one."""
    return ["srun", f"--nodes={nodes}", *((f"--nodelist={','.join(nodelist)}",) if nodelist else ()),
            "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--job-name=hpcgpu-doctor", sys.executable, "-m",
            "hpcgpu.doctor.slurm_allreduce", f"--nproc-per-node={nproc or 0}"]


def node_names(p: Probe, nodes: int) -> list[str]:
    """The nodes to test: this allocation's, else `nodes` nodes Slurm gives a one-line step now."""
    if p.env.get("SLURM_JOB_NODELIST"):
        return expand_nodelist(p.env["SLURM_JOB_NODELIST"])[:nodes]
    out = p.run(["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--job-name=hpcgpu-doctor",
                 "printenv", "SLURMD_NODENAME"], timeout=p.timeout, env=child_env(p))
    return node_names_in(out.stdout) if out.returncode == 0 else []


def node_names_in(output: str) -> list[str]:
    """The node names `srun ... printenv SLURMD_NODENAME` printed, without srun's own lines ("srun: job
    545 queued and waiting for resources" comes on the same merged output)."""
    return sorted({line.strip() for line in output.splitlines()
                   if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", line.strip())})


def top_busbw(res: dict) -> float | None:
    """The bus bandwidth at the largest message size (GB/s), the figure pairs are compared by."""
    return res["results"][-1]["busbw_gbs"] if res.get("results") else None


@check("allreduce_slurm")
def check_allreduce_slurm(p: Probe) -> CheckResult:
    """A real all-reduce across Slurm nodes (NCCL on GPUs, gloo otherwise); from 3 nodes on, pairs of
    them name a node that fails or is far slower than the others."""
    if not p.which("srun"):
        return fail("srun not on PATH", "run --slurm on a Slurm login or compute node")
    wanted = max(p.slurm_nodes, NODES)
    names = node_names(p, wanted) if wanted > NODES else []
    res, output, failure = run_launch(p, srun_argv(p.nproc, wanted, names), None)
    located = locate(names, lambda a, b: pair_busbw(p, a, b)) if len(names) >= 3 else None
    if located is not None and located.bad:
        data = {"pairs": [{"nodes": [a, b], "busbw_gbs": bw} for a, b, bw in located.pairs],
                **(failure.data if failure else {"all": res})}
        return fail(f"node(s) {', '.join(located.bad)}: {located.reason}",
                    f"leave them out: sbatch --exclude={','.join(located.bad)} (or `slurm.extra: "
                    f"[--exclude={','.join(located.bad)}]` in the spec), and tell the admins", data)
    if failure is not None:
        why = f"; pairs: {located.reason}" if located else ""
        return fail(failure.detail + why, SRUN_HINT, failure.data)
    result = summarize_allreduce(res, output)
    if located is not None:
        result = dataclasses.replace(result, detail=f"{result.detail}; pairs: {located.reason}", data={
            **result.data, "pairs": [{"nodes": [a, b], "busbw_gbs": bw} for a, b, bw in located.pairs]})
    if res["nodes"] < wanted:
        return warn(f"{result.detail}: ranks ran on {res['nodes']} node(s), not {wanted}",
                    f"ask for nodes in a partition with at least {wanted} of them", result.data)
    return result


def pair_busbw(p: Probe, a: str, b: str) -> float | None:
    """The all-reduce between two nodes: its top bus bandwidth, None when it failed."""
    res, _, failure = run_launch(p, srun_argv(p.nproc, 2, (a, b)), None)
    return None if failure is not None else top_busbw(res)


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
