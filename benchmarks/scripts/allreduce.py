"""Gloo all-reduce timing on every rank. Usage: allreduce.py CONFIG_JSON (sizes in bytes, iterations, repeats,
out file); rank 0 writes {size: [seconds per all-reduce, one per repeat]}."""

import json
import sys
import time

import torch
import torch.distributed as dist
from clean_exit import exit_cleanly

cfg = json.loads(sys.argv[1])
dist.init_process_group("gloo")
results = {}
for size, iters in zip(cfg["sizes"], cfg["iters"]):
    t = torch.ones(size // 4, dtype=torch.float32)
    for _ in range(2):  # warm-up: connections, buffers
        dist.all_reduce(t)
    per_op = []
    for _ in range(cfg["repeats"]):
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        per_op.append((time.perf_counter() - t0) / iters)
    results[str(size)] = per_op
if dist.get_rank() == 0:
    with open(cfg["out"], "w") as f:
        json.dump(results, f)
exit_cleanly()
