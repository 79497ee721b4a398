"""Tier 5: all-reduce bus bandwidth (gloo, 2 ranks through `hpcgpu run local`, several message sizes)
vs a single-process memory copy of the same bytes (one thread)."""

from __future__ import annotations

import json
import time

from benchmarks.harness import SCRIPTS, Bench, Stat, TierResult, compare, hpcgpu_cmd, run as run_cmd

TITLE = "All-reduce bus bandwidth (gloo, 2 ranks) vs memory copy"
KIB, MIB = 1024, 1024 * 1024


def _sizes(b: Bench) -> tuple[list[int], list[int]]:
    if b.smoke:
        return [4 * KIB, 256 * KIB], [10, 3]
    return [4 * KIB, 64 * KIB, 1 * MIB, 16 * MIB, 64 * MIB], [400, 200, 40, 6, 3]


def _memcpy(size: int, iters: int, repeats: int) -> list[float]:
    """GB/s of dst.copy_(src) for `size` bytes in this process, one thread; one figure per repeat."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        src, dst = torch.ones(size // 4), torch.empty(size // 4)
        dst.copy_(src)
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(iters):
                dst.copy_(src)
            out.append(size / ((time.perf_counter() - t0) / iters) / 1e9)
        return out
    finally:
        torch.set_num_threads(threads)


def _label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def run(b: Bench, result: TierResult) -> None:
    sizes, iters = _sizes(b)
    cwd = b.workdir("tier5")
    out = cwd / "allreduce.json"
    cfg = {"sizes": sizes, "iters": iters, "repeats": b.reps, "out": str(out)}
    run_cmd([*hpcgpu_cmd(), "run", "local", "--nproc", "2", "--", SCRIPTS / "allreduce.py", json.dumps(cfg)],
            b.env(), cwd, timeout=600)
    per_op = json.loads(out.read_text())
    for size, n in zip(sizes, iters):
        # bus bandwidth = algorithm bandwidth x 2(n-1)/n (nccl-tests' definition); n = 2 ranks: factor 1
        busbw = [size / t / 1e9 * 2 * (2 - 1) / 2 for t in per_op[str(size)]]
        copy = _memcpy(size, max(n, 3), b.reps)
        result.figures.append(compare(
            f"all-reduce {_label(size)}", Stat("gloo busbw", "GB/s", busbw), Stat("memcpy", "GB/s", copy),
            "busbw / memcpy", note=f"{n} all-reduces per timing, {b.reps} timings; median latency "
                                   f"{sorted(per_op[str(size)])[len(per_op[str(size)]) // 2] * 1e6:,.0f} us"))
    result.note = ("busbw = bytes / time per all-reduce x 2(n-1)/n, n = 2 ranks; the memory copy is "
                   "torch copy_ of the same bytes in one process with one thread.")
