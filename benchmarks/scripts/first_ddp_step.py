"""The first training step every launch-time script measures: one DDP step of a small MLP, seeded,
so tier 2 (first_step.py) and tier 10 (resume_step.py) time the same work after their start-up."""

import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP


def first_ddp_step() -> float:
    """Run the step on the initialised process group; return the wall-clock time it ended."""
    torch.manual_seed(0)
    model = DDP(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    return time.time()
