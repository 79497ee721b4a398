"""A hand-written DDP loop that uses `hpcgpu.dist` (run as a script entry by the integration tests).

Usage: train_script.py STEPS DELAY_S
"""

import os
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from hpcgpu import dist


def batch(rank: int, step: int) -> torch.Tensor:
    return torch.randn(16, 8, generator=torch.Generator().manual_seed(rank * 100_003 + step))


def main(steps: int, delay_s: float) -> None:
    info = dist.init()
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    ddp = DDP(model) if info.world_size > 1 else model
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = 0
    state = dist.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        dist.print0(f"resumed at step {start} from {os.environ['HPCGPU_RESUME_FROM']}")
    for step in range(start, steps):
        x = batch(info.rank, step)
        loss = ((ddp(x) - x.sum(dim=1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        time.sleep(delay_s)
        dist.print0(f"step {step + 1}/{steps} loss {loss.item():.6f}")
        done, stop = step + 1, dist.should_stop()  # every rank calls should_stop at every step
        if done % 5 == 0 or stop:
            dist.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict()}, done)
        if stop:
            dist.print0(f"stopping at step {done}")
            return
    dist.print0(f"final_weight={model.weight.detach().flatten().tolist()}")


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
