"""GPU tier: step time of the bundled GPT wrapped in DDP with world size 1 vs the plain model (bf16 autocast,
AdamW), alternating rounds in one process. Usage (under torchrun, 1 rank): ddp_world1.py CONFIG_JSON"""

import contextlib
import json
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from hpcgpu.examples.gpt import make_task
from clean_exit import exit_cleanly

cfg = json.loads(sys.argv[1])
cuda = torch.cuda.is_available()
device = torch.device("cuda", 0) if cuda else torch.device("cpu")
dist.init_process_group("nccl" if cuda else "gloo")
task = make_task(**cfg["gpt"])
torch.manual_seed(0)
models = {"plain": task.model().to(device), "ddp": DDP(task.model().to(device), device_ids=[0] if cuda else None)}
opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
items = [task.dataset[i] for i in range(cfg["batch_size"])]
x = torch.stack([a for a, _ in items]).to(device)
y = torch.stack([b for _, b in items]).to(device)
amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()


def sync():
    if cuda:
        torch.cuda.synchronize()


def steps(name, n):
    m, opt = models[name], opts[name]
    for _ in range(n):
        with amp:
            loss = task.loss(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


for name in models:
    steps(name, 3)  # warm-up: kernels, allocator, DDP buckets
out = {"plain": [], "ddp": []}
for r in range(cfg["repeats"]):
    for name in (("plain", "ddp") if r % 2 == 0 else ("ddp", "plain")):
        sync()
        t0 = time.perf_counter()
        steps(name, cfg["steps"])
        sync()
        out[name].append((time.perf_counter() - t0) / cfg["steps"])
with open(cfg["out"], "w") as f:
    json.dump(out, f)
exit_cleanly()
