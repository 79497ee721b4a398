"""Evaluation over a whole dataset, sharded over ranks: every sample on exactly one rank, counted once.

torch's DistributedSampler pads a shard with repeated samples so that every rank gets as many
(or drops the tail with drop_last): either would bias a metric. Here rank r evaluates samples
r, r + world, r + 2 world, ... (shards differ by at most one sample), the last batch may be short,
and each metric is a sum over samples and a count, summed over ranks before the division: the
result equals evaluating the whole set in one process.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader, Sampler

from hpcgpu.contract.errors import UserError
from hpcgpu.worker.dist import is_distributed
from hpcgpu.worker.state import rng_state, set_rng_state

#: the sample count's key in an evaluation's results
SAMPLES = "samples"
#: in the checkpoint directory: which checkpoint checkpoint.keep_best keeps, and its metric
BEST_FILE = "best.json"


def keep_best_rule(text: Optional[str]) -> Optional[tuple[str, str]]:
    """checkpoint.keep_best `accuracy:max` -> ("accuracy", "max"); None when unset."""
    if not text:
        return None
    metric, direction = text.rsplit(":", 1)
    return metric, direction


def improves(value: float, best: Optional[float], direction: str) -> bool:
    """Whether value beats the best so far (any value beats none; a tie does not; nan never does)."""
    if value != value:
        return False
    return best is None or (value > best if direction == "max" else value < best)


class EvalShard(Sampler[int]):
    """This rank's indices of an evaluation set: rank, rank + world_size, ... without padding."""

    def __init__(self, n_samples: int, world_size: int, rank: int):
        self.indices = range(rank, n_samples, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def per_sample(values: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
    """Check a metric function's answer: one value per sample of the batch for every name."""
    out = {}
    for name, value in values.items():
        value = torch.as_tensor(value).detach()
        if value.dim() != 1 or value.shape[0] != batch:
            raise UserError(f"Task.eval_metrics returned {name!r} with shape {tuple(value.shape)}: give one "
                            f"value per sample of the batch (shape ({batch},)); hpcgpu averages over the set")
        out[name] = value.double()
    return out


def loss_per_sample(loss: Callable[[Any, Any], torch.Tensor]) -> Callable[[Any, Any], dict[str, torch.Tensor]]:
    """The default metric: the Task's loss of each batch, given to each of its samples.

    For a loss that averages over the batch (the usual reduction='mean') the mean over the set of
    these values is the set's mean loss, however the set is split into batches and ranks."""

    def metrics(output: Any, target: Any) -> dict[str, torch.Tensor]:
        n = len(target)
        return {"loss": loss(output, target).detach().float().reshape(1).expand(n)}

    return metrics


def _batches_to_run(mine: int, pad: bool, device: torch.device) -> int:
    """How many forward passes this rank makes: its own, or (pad) as many as the rank with the
    most, because a sharded model's forward is a collective that every rank must enter."""
    if not (pad and is_distributed()):
        return mine
    t = torch.tensor([mine], dtype=torch.int64, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return int(t.item())


def sum_over_ranks(sums: dict[str, float], count: int, device: torch.device) -> dict[str, float]:
    """{name: mean over all ranks' samples, 'samples': count of them}: one float64 all-reduce."""
    names = sorted(sums)
    t = torch.tensor([float(count)] + [sums[n] for n in names], dtype=torch.float64, device=device)
    if is_distributed():
        tdist.all_reduce(t)
    total = int(round(t[0].item()))
    means = {n: (t[i + 1].item() / total if total else float("nan")) for i, n in enumerate(names)}
    return {**means, SAMPLES: total}


def evaluate(model: torch.nn.Module, dataset: Any, metrics: Callable[[Any, Any], dict[str, torch.Tensor]],
             batch_size: int, world_size: int, rank: int, device: torch.device, collective_device: torch.device,
             to_device: Callable[[Any, torch.device], Any], autocast: Callable[[], Any], pad_forwards: bool = False,
             beat: Optional[Callable[[], None]] = None) -> dict[str, float]:
    """Mean of each metric over the whole dataset (every rank calls this; all get the same answer).

    The RNG states are restored afterwards, so evaluation never shifts the training run's random
    stream (the loader, dropout left on by a custom model, a metric that samples)."""
    if len(dataset) < world_size:
        raise UserError(f"the evaluation set has {len(dataset)} samples, fewer than the {world_size} ranks: "
                        "give Task.eval_dataset at least one sample per rank")
    saved = rng_state()
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    try:
        # an explicit generator: a loader without one draws its seed from the global RNG
        loader = DataLoader(dataset, batch_size=batch_size, sampler=EvalShard(len(dataset), world_size, rank),
                            drop_last=False, generator=torch.Generator().manual_seed(0))
        runs = _batches_to_run(len(loader), pad_forwards, collective_device)
        first = None
        with torch.no_grad():
            for i, batch in enumerate(loader):
                inputs, target = to_device(batch, device)
                first = first if first is not None else inputs
                with autocast():
                    output = model(inputs)
                for name, value in per_sample(metrics(output, target), len(target)).items():
                    sums[name] = sums.get(name, 0.0) + value.sum().item()
                count += len(target)
                if beat:
                    beat()
            for _ in range(runs - len(loader)):  # the sharded model's forward collectives, results unused
                with autocast():
                    model(first)
        return sum_over_ranks(sums, count, collective_device)
    finally:
        model.train(was_training)
        set_rng_state(saved)
