"""A hand-written DDP loop (a script entry) whose rank 1 gets stuck in user code at step 20, before
its backward: the hang watchdog's report must show this file's `time.sleep` line in rank 1's stack.

Usage: hang_script.py [STEPS]. It beats only through dist.should_stop(), as the documented loop does.
"""

import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from hpcgpu import dist

STUCK_STEP = 20


def main(steps: int) -> None:
    info = dist.init()
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(steps):
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(info.rank * 1000 + step))
        loss = model(x).pow(2).mean()
        if info.rank == 1 and step == STUCK_STEP:
            time.sleep(10**6)  # stuck in user code (the hang report shows this line)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if dist.should_stop():
            break


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
