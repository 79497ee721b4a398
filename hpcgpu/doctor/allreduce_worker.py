"""One rank of the doctor's all-reduce test; started by torchrun, rank 0 writes the results as JSON.

Bandwidth follows nccl-tests (doc/PERFORMANCE.md there): algbw = bytes / time and
busbw = algbw * 2(n-1)/n, the rate each link carries in a ring all-reduce, comparable across n.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import timedelta
from typing import Any

RESULT_MARKER = "HPCGPU_DOCTOR_RESULT "


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """--out PATH (or '-' for a marker line on stdout), --backend, --sizes, --iters, --warmup."""
    ap = argparse.ArgumentParser(prog="python -m hpcgpu.doctor.allreduce_worker")
    ap.add_argument("--out", required=True, help="JSON file for rank 0's results, '-' for stdout")
    ap.add_argument("--backend", default="auto", choices=["auto", "nccl", "gloo"])
    ap.add_argument("--sizes", default="65536,1048576,16777216", help="message sizes in bytes")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="process group timeout, seconds")
    return ap.parse_args(argv)


def bus_bandwidth(algbw: float, world_size: int) -> float:
    """nccl-tests' bus bandwidth of an all-reduce."""
    return algbw * 2 * (world_size - 1) / world_size


def version_text(version: Any) -> str:
    """torch.cuda.nccl.version() is a tuple (2, 21, 5) in recent torch, an int 22105 in old ones."""
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _sync(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(torch: Any, dist: Any, device: Any, nbytes: int, iters: int, warmup: int) -> dict:
    """Time `iters` all-reduces of an nbytes float32 buffer; slowest rank's time counts."""
    buf = torch.zeros(max(nbytes // 4, 1), dtype=torch.float32, device=device)
    for _ in range(warmup):
        dist.all_reduce(buf)
    _sync(torch, device)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(buf)
    _sync(torch, device)
    elapsed = torch.tensor([(time.perf_counter() - start) / iters], device=device, dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    seconds = float(elapsed.item())
    algbw = buf.numel() * 4 / seconds / 1e9
    return {"bytes": buf.numel() * 4, "time_us": round(seconds * 1e6, 1),
            "algbw_gbs": round(algbw, 3),
            "busbw_gbs": round(bus_bandwidth(algbw, dist.get_world_size()), 3)}


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Initialise the process group, check correctness, measure; rank 0 returns the results."""
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > local_rank \
            else "gloo"
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device  # binds NCCL to this GPU now, so barrier() cannot guess wrong
    dist.init_process_group(backend, timeout=timedelta(seconds=args.timeout), **kwargs)
    try:
        world = dist.get_world_size()
        ones = torch.ones(1024, device=device)
        dist.all_reduce(ones)
        correct = bool(torch.all(ones == world).item())
        results = [measure(torch, dist, device, int(s), args.iters, args.warmup)
                   for s in args.sizes.split(",")]
        hosts: list[Any] = [None] * world
        dist.all_gather_object(hosts, os.environ.get("SLURMD_NODENAME") or socket.gethostname())
        if dist.get_rank() != 0:
            return None
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        nccl = version_text(torch.cuda.nccl.version()) if backend == "nccl" else None
        return {"backend": backend, "world_size": world, "device": name, "hosts": hosts,
                "nodes": len(set(hosts)), "correct": correct, "torch": torch.__version__,
                "nccl": nccl, "results": results}
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """Entry point under torchrun."""
    args = parse_args(argv)
    result = run(args)
    if result is None:
        return
    text = json.dumps(result)
    if args.out == "-":
        print(RESULT_MARKER + text, flush=True)
    else:
        tmp = f"{args.out}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
