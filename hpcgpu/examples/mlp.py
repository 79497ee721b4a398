"""The default demo: a small MLP learning a synthetic 10-class problem (seconds on 2 CPU ranks)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from hpcgpu.worker.task import Task


class MLP(nn.Module):
    """Two hidden layers with dropout (so resume tests exercise the RNG state)."""

    def __init__(self, dim: int, hidden: int, classes: int, dropout: float, delay_s: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, classes),
        )
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay_s:
            time.sleep(self.delay_s)  # tests slow steps down to land a signal mid-epoch
        return self.net(x)


def synthetic_data(n_samples: int, dim: int, classes: int, seed: int) -> TensorDataset:
    """Gaussian inputs labelled by a fixed random teacher (a linear map plus a mild non-linearity)."""
    gen = torch.Generator().manual_seed(seed)  # its own generator: the data never depends on train.seed
    x = torch.randn(n_samples, dim, generator=gen)
    w1 = torch.randn(dim, classes, generator=gen)
    w2 = torch.randn(dim, classes, generator=gen) / 4
    y = (x @ w1 + torch.tanh(x) @ w2).argmax(dim=1)
    return TensorDataset(x, y)


def make_task(n_samples: int = 8192, dim: int = 32, hidden: int = 128, classes: int = 10,
              dropout: float = 0.1, data_seed: int = 1234, delay_s: float = 0.0) -> Task:
    """Task factory for `entry.task: hpcgpu.examples.mlp:make_task` (the bundled default)."""
    return Task(
        model=lambda: MLP(dim, hidden, classes, dropout, delay_s),
        dataset=synthetic_data(n_samples, dim, classes, data_seed),
        loss=F.cross_entropy,
        flops_per_sample=6 * (dim * hidden + hidden * hidden + hidden * classes),
    )
