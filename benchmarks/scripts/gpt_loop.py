"""The minimal hand-written loop for the GPU tier (nanoGPT style): the bundled GPT, DDP, bf16 autocast,
AdamW, the same data and sampler as the Trainer. Usage (under torchrun): gpt_loop.py CONFIG_JSON"""

import contextlib
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from benchmarks.workload import make_gpt_task
from clean_exit import exit_cleanly

cfg = json.loads(sys.argv[1])
cuda = torch.cuda.is_available()
local_rank = int(os.environ.get("LOCAL_RANK", "0"))
device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(device)
dist.init_process_group("nccl" if cuda else "gloo")
task = make_gpt_task(timing_dir=cfg["timing_dir"], sync_at=cfg["sync_at"], steps=cfg["steps"], **cfg["gpt"])
torch.manual_seed(0)
model = DDP(task.model().to(device), device_ids=[local_rank] if cuda else None)
opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
sampler = DistributedSampler(task.dataset, shuffle=True, seed=0)
amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg["bf16"] and cuda else contextlib.nullcontext()
step, epoch = 0, 0
while step < cfg["steps"]:
    sampler.set_epoch(epoch)
    for x, y in DataLoader(task.dataset, batch_size=cfg["batch_size"], sampler=sampler, drop_last=True, pin_memory=cuda):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with amp:
            loss = task.loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step == cfg["steps"]:
            break
    epoch += 1
exit_cleanly()
