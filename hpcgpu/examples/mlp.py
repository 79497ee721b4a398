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
    return synthetic_sets(n_samples, dim, classes, seed, 0)[0]


def synthetic_sets(n_samples: int, dim: int, classes: int, seed: int,
                   n_eval: int) -> tuple[TensorDataset, TensorDataset]:
    """The training set and an evaluation set of n_eval other inputs labelled by the same teacher."""
    gen = torch.Generator().manual_seed(seed)  # its own generator: the data never depends on train.seed
    x = torch.randn(n_samples, dim, generator=gen)
    w1 = torch.randn(dim, classes, generator=gen)
    w2 = torch.randn(dim, classes, generator=gen) / 4
    # drawn after the teacher, from a generator of its own: the training set is the same with or without it
    x_eval = torch.randn(n_eval, dim, generator=torch.Generator().manual_seed(seed + 1))

    def label(inputs: torch.Tensor) -> torch.Tensor:
        return (inputs @ w1 + torch.tanh(inputs) @ w2).argmax(dim=1)

    return TensorDataset(x, label(x)), TensorDataset(x_eval, label(x_eval))


def classification_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample cross-entropy and correctness: their means over the set are the loss and the accuracy."""
    return {"loss": F.cross_entropy(logits.float(), target, reduction="none"),
            "accuracy": (logits.argmax(dim=1) == target).float()}


def make_task(n_samples: int = 8192, dim: int = 32, hidden: int = 128, classes: int = 10,
              dropout: float = 0.1, data_seed: int = 1234, delay_s: float = 0.0, n_eval: int = 1000) -> Task:
    """Task factory for `entry.task: hpcgpu.examples.mlp:make_task` (the bundled default).

    n_eval: samples of the evaluation set (train.eval_every_steps; 0: no evaluation)."""
    train, held_out = synthetic_sets(n_samples, dim, classes, data_seed, n_eval)
    return Task(
        model=lambda: MLP(dim, hidden, classes, dropout, delay_s),
        dataset=train,
        loss=F.cross_entropy,
        flops_per_sample=6 * (dim * hidden + hidden * hidden + hidden * classes),
        eval_dataset=held_out if n_eval else None,
        eval_metrics=classification_metrics,
    )
