"""A Task: what the built-in Trainer needs from the user (model, data, loss), and how to load one."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from hpcgpu.contract.errors import UserError


@dataclass
class Task:
    """Model, data and loss for the Trainer; returned by the spec's `entry.task` factory."""

    model: Callable[[], nn.Module]
    """Builds the model (called once per rank, under the run's seed, so every rank starts equal)."""
    dataset: Any
    """A map-style dataset whose items are (inputs, target) pairs; the same on every rank."""
    loss: Callable[[Any, Any], torch.Tensor]
    """loss(model(inputs), target) -> scalar tensor."""
    optimizer: Optional[Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]] = None
    """optimizer(params, lr); default AdamW(params, lr)."""
    lr_schedule: Optional[Callable[[int], float]] = None
    """Factor applied to the scaled lr at optimizer step n (LambdaLR); default constant 1."""
    shard_units: Optional[Callable[[nn.Module], Iterable[nn.Module]]] = None
    """FSDP: submodules to shard separately (e.g. transformer blocks); the root is always sharded."""
    flops_per_sample: Optional[float] = None
    """Training FLOPs per sample (forward + backward), for MFU in the summary when known."""
    eval_dataset: Any = None
    """A map-style evaluation set of (inputs, target) pairs, evaluated every `train.eval_every_steps`
    and at the end, each sample on exactly one rank (docs/trainer.md); None: no evaluation."""
    eval_metrics: Optional[Callable[[Any, Any], dict[str, torch.Tensor]]] = None
    """eval_metrics(model(inputs), target) -> {name: one value per sample}; the Trainer reports each
    name's mean over the whole set as `eval/<name>`. Default: {"loss": the Task's loss of the batch}."""


def load_task(spec_task: str, task_args: dict) -> Task:
    """Import `package.module:function`, call it with task_args, and check it returned a Task."""
    module_name, func_name = spec_task.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UserError(f"entry.task: module {module_name!r} not found (is it on PYTHONPATH?)") from None
        raise
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise UserError(f"entry.task: {module_name!r} has no function {func_name!r}")
    try:
        inspect.signature(factory).bind(**task_args)
    except TypeError as e:
        raise UserError(f"entry.task_args do not fit {spec_task}: {e}") from None
    task = factory(**task_args)
    if not isinstance(task, Task):
        raise UserError(f"entry.task: {spec_task} returned {type(task).__name__}, expected hpcgpu.dist.Task")
    return task
