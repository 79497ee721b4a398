"""The minimal hand-written DDP loop the Trainer is measured against (nanoGPT style), under bare torchrun.

Same model, data, loss, optimizer, batch and sampler as the Trainer side (benchmarks/workload.py), and
the same timestamp at each loss call. Usage: ddp_loop.py CONFIG_JSON
"""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from benchmarks.workload import TimedLoss, build_dataset, build_model
from clean_exit import exit_cleanly

cfg = json.loads(sys.argv[1])
dist.init_process_group("gloo")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
torch.manual_seed(0)
model = DDP(build_model(cfg["dim"], cfg["hidden"], cfg["layers"], cfg["classes"]))
opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
data = build_dataset(cfg["n_samples"], cfg["dim"], cfg["classes"])
sampler = DistributedSampler(data, shuffle=True, seed=0)
loss_fn = TimedLoss(F.cross_entropy, cfg["timing_dir"], cfg["steps"])
step, epoch = 0, 0
while step < cfg["steps"]:
    sampler.set_epoch(epoch)
    for x, y in DataLoader(data, batch_size=cfg["batch_size"], sampler=sampler, drop_last=True):
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step == cfg["steps"]:
            break
    epoch += 1
exit_cleanly()
