"""A task that misbehaves on purpose, for tests/system/test_faults.py. The ranks import it as
`tests.helpers.faulty_task` (PYTHONPATH is the repository, see relkit.base_env).

`make_task(fault=..., rank=R, step=S, attempt=A)` is the bundled demo MLP whose loss function, on
global rank R, at this attempt's S-th step, and only in elastic attempt A (TORCHELASTIC_RESTART_COUNT),
first records `<run dir>/fault-rank<R>.json` (time, pid) and then:
  exit  - os._exit(3): a crash with a non-zero status and no traceback
  raise - raise RuntimeError
  pause - sleep forever: never reaches the next collective (a hang, or a target for kill -9)
  fill  - fill the file system holding `fill_path` to the last byte, then carry on training
  term  - send SIGTERM to this rank only (not to the node agent), then carry on training
  gate  - wait (at most 300 s) until `<run dir>/go` exists, then carry on training: the run holds
          still, every connection open, while a test looks at it (the loss is unchanged)
  spin  - spin in a tight Python loop forever: no progress, full CPU
  loader - (with train.num_workers > 0) the data-loader worker of rank R sleeps forever once rank R
          has read S batches of 8 samples: the rank waits on its loader, the others in a collective
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

from hpcgpu.examples.mlp import make_task as demo_task


def _record(rank: int) -> None:
    run_dir = Path(os.environ.get("HPCGPU_RUN_DIR", "."))
    (run_dir / f"fault-rank{rank}.json").write_text(json.dumps({"time": time.time(), "pid": os.getpid()}))


def fill_filesystem(path: str) -> None:
    """Write zeros into `path` until the file system says ENOSPC."""
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:  # the last few bytes too
                f.write(b"\0")
        except OSError:
            pass


def fault_now(fault: str, rank: int, fill_path: str = "") -> None:
    _record(rank)
    if fault == "exit":
        os._exit(3)
    if fault == "raise":
        raise RuntimeError(f"injected failure on rank {rank}")
    if fault == "pause":
        while True:
            time.sleep(1)
    if fault == "fill":
        fill_filesystem(fill_path)
    if fault == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    if fault == "spin":
        while True:
            pass
    if fault == "gate":
        go = Path(os.environ.get("HPCGPU_RUN_DIR", ".")) / "go"
        deadline = time.monotonic() + 300
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


#: the batch size the loader fault counts in (relkit.small_spec's train.batch_size)
LOADER_BATCH = 8


def make_task(fault: str = "none", rank: int = 1, step: int = 3, attempt: int = 0, fill_path: str = "", **demo_args):
    task = demo_task(**demo_args)
    loss, calls = task.loss, [0]
    me = int(os.environ.get("RANK", "0"))
    this_attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def faulty_loss(output, target):
        calls[0] += 1
        if fault != "none" and me == rank and this_attempt == attempt and calls[0] == step:
            fault_now(fault, rank, fill_path)
        return loss(output, target)

    task.loss = faulty_loss
    if fault == "loader" and me == rank:
        task = dataclasses.replace(task, dataset=_StuckInWorker(task.dataset, step * LOADER_BATCH))
    return task


class _StuckInWorker:
    """The dataset, except that a data-loader worker process sleeps forever at sample index `after`
    of the rank's reads (the rank's main process is never stopped by it)."""

    def __init__(self, dataset, after: int):
        self.dataset, self.after, self.reads = dataset, after, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        import torch.utils.data

        self.reads += 1
        if torch.utils.data.get_worker_info() is not None and self.reads > self.after:
            _record(int(os.environ.get("RANK", "0")))
            while True:
                time.sleep(1)
        return self.dataset[i]
