"""`python -m hpcgpu.backends.slurm.node_gpus -- docker|podman run ... IMAGE NODE_ARGV...`: start the
node's container with exactly the job's GPUs. Stdlib only; no shell.

`--gpus all` would expose every GPU of the node, other jobs' included (a docker/podman container is
not in the job's cgroup), while CUDA_VISIBLE_DEVICES numbers the job's GPUs as the job sees them.
Which GPUs those are is only known on the node, when the job runs, so the Slurm planner puts this
step before the runtime and this step adds the GPU flags (hpcgpu.contract.oci) right after
`RUNTIME run`, then replaces itself with the runtime (same pid: NodeCommand's signals reach it).

Why `nvidia-smi --query-gpu=index,uuid` in the job, mapped through CUDA_VISIBLE_DEVICES:
- With ConstrainDevices=yes the job's cgroup hides the other GPUs: nvidia-smi here lists only the
  job's, numbered from 0, and Slurm's CUDA_VISIBLE_DEVICES uses that same numbering (0,1,...).
- Without it nvidia-smi lists every GPU of the node with host numbering, and Slurm's
  CUDA_VISIBLE_DEVICES holds host indices: it is then the only thing naming the job's GPUs.
So taking nvidia-smi's list alone would hand out other jobs' GPUs on unconstrained clusters, and
SLURM_JOB_GPUS (host indices always) would pick the wrong GPUs of a constrained listing; an index
of CUDA_VISIBLE_DEVICES looked up in the listing made in this same cgroup is right in both cases.
(nvidia-smi and Slurm both number GPUs in PCI bus order; CUDA's own default order may differ, which
is why the index goes through nvidia-smi and not through CUDA.)
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from typing import Mapping, Sequence

from hpcgpu.contract.oci import oci_gpu_args

QUERY = ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"]
#: CUDA_VISIBLE_DEVICES values that mean "no GPU" (Slurm writes NoDevFiles for a GRES without files)
_NONE = ("", "-1", "NoDevFiles")


def job_gpu_uuids(smi_csv: str, visible: str | None) -> list[str]:
    """The job's GPUs as UUIDs, from `nvidia-smi --query-gpu=index,uuid --format=csv,noheader` run in
    the job and its CUDA_VISIBLE_DEVICES (None: unset, every GPU listed). Entries that are already
    UUIDs (GPU-..., MIG-...) are kept; an index the listing lacks raises ValueError: never guess."""
    by_index = {}
    for line in smi_csv.splitlines():
        index, _, uuid = (part.strip() for part in line.partition(","))
        if index.isdigit() and uuid:
            by_index[index] = uuid
    if visible is None:
        return [by_index[i] for i in sorted(by_index, key=int)]
    if visible.strip() in _NONE:
        return []
    out = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry == "-1":  # CUDA ignores everything from -1 on
            break
        if entry.startswith(("GPU-", "MIG-")):
            out.append(entry)
        elif entry in by_index:
            out.append(by_index[entry])
        else:
            raise ValueError(f"CUDA_VISIBLE_DEVICES index {entry} is not a GPU nvidia-smi lists in this job "
                             f"({', '.join(sorted(by_index, key=int)) or 'none'})")
    return out


def runtime_argv(argv: Sequence[str], uuids: Sequence[str], environ: Mapping[str, str]) -> tuple[list[str], dict]:
    """The runtime's argv with the GPU flags after `RUNTIME run`, and its environment: inside, the
    container sees only these GPUs, numbered from 0, so the CUDA_VISIBLE_DEVICES it is passed by name
    (-e) must number them so (host indices like 2,3 would name devices that do not exist there)."""
    runtime = os.path.basename(argv[0]) if argv else ""
    if runtime not in ("docker", "podman") or list(argv[1:2]) != ["run"]:
        raise ValueError(f"expected `docker run ...` or `podman run ...`, got {shlex.join(argv[:2])!r}")
    env = dict(environ)
    if not uuids:
        return list(argv), env
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(uuids)))
    return [*argv[:2], *oci_gpu_args(runtime, list(uuids)), *argv[2:]], env


def query_gpus() -> str | None:
    """nvidia-smi's index,uuid listing in this job; None when nvidia-smi is missing or fails."""
    if shutil.which(QUERY[0]) is None:
        return None
    try:
        out = subprocess.run(QUERY, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _say(message: str) -> None:
    print(f"hpcgpu: {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "--" or len(argv) < 3:
        raise SystemExit("usage: python -m hpcgpu.backends.slurm.node_gpus -- docker|podman run ... IMAGE COMMAND...")
    command = argv[1:]
    listing = query_gpus()
    if listing is None:
        # as for a CPU run: no GPU flags (the agent then says it found no GPUs)
        _say("no GPUs passed to the container: nvidia-smi is not on PATH or failed on this node")
        uuids: list[str] = []
    else:
        try:
            uuids = job_gpu_uuids(listing, os.environ.get("CUDA_VISIBLE_DEVICES"))
        except ValueError as err:
            raise SystemExit(f"hpcgpu: {err}") from None
    try:
        final, env = runtime_argv(command, uuids, os.environ)
    except ValueError as err:
        raise SystemExit(f"hpcgpu: {err}") from None
    _say(f"the job's GPUs on this node: {', '.join(uuids) or 'none'}")
    os.execvpe(final[0], final, env)


if __name__ == "__main__":
    main(sys.argv[1:])
