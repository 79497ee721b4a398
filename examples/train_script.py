"""A hand-written DDP loop that gets hpcgpu's guarantees through `from hpcgpu import dist`.

    hpcgpu run local --nproc 2 -- examples/train_script.py --steps 200
"""

import argparse

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from hpcgpu import dist

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--every", type=int, default=50)
args = parser.parse_args()

info = dist.init()                                 # process group with a timeout; device from LOCAL_RANK
torch.manual_seed(0)
model = DDP(torch.nn.Linear(16, 1).to(dist.device()))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
state = dist.load_checkpoint()                     # newest valid checkpoint, None on a first run
start = 0
if state:
    model.module.load_state_dict(state["model"])
    opt.load_state_dict(state["optim"])
    start = int(state["step"])
    dist.print0(f"resumed at step {start}")

gen = torch.Generator().manual_seed(1000 + info.rank)
step = start
for step in range(start + 1, args.steps + 1):
    x = torch.randn(32, 16, generator=gen).to(dist.device())
    loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    stop = dist.should_stop()                      # all ranks agree, so they stop at the same step
    if step % args.every == 0 or stop or step == args.steps:
        dist.save_checkpoint({"model": model.module.state_dict(), "optim": opt.state_dict(), "step": step}, step)
    if step % args.every == 0:
        dist.print0(f"step {step} loss {loss.item():.4f}")
    if stop:
        dist.print0(f"stopping at step {step}: checkpoint saved")
        raise SystemExit(75)                       # 75: stopped, resumable
dist.print0(f"done at step {step}, final loss {loss.item():.4f}")
