"""Waiting on Slurm jobs' files, shared by the Slurm and container tiers."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

#: the bundled demo slowed to ~0.15 s a step (32 steps of 2 ranks x 16 samples), so a signal can land
#: mid-training; only the final and the stop checkpoints. Shared by the Slurm and container tiers.
SLOW_TRAIN = {
    "name": "sub",
    "entry": {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 1024, "delay_s": 0.15}},
    "train": {"batch_size": 16, "epochs": 1, "log_every": 2, "seed": 5},
    "checkpoint": {"every_steps": 1000},
    "logging": {"progress": "lines", "tensorboard": False},
    "distributed": {"stop_grace_s": 30},
    "slurm": {"signal_before_s": 60},
}


def node_logs(run_dir: Path) -> str:
    """The tail of every node's submitit log, for assertion messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted((run_dir / "submitit").glob("*.out")))


def wait_for_text(path: Path, pattern: str, timeout_s: float, explain: Optional[Callable[[], str]] = None) -> str:
    """Until path's text matches pattern (regex, multiline); the text. Fails with what it saw."""
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if re.search(pattern, text, re.MULTILINE):
            return text
        time.sleep(0.2)
    more = f"\n{explain()}" if explain else ""
    pytest.fail(f"{path} did not show {pattern!r} within {timeout_s:.0f}s; it has:\n{text[-3000:]}{more}", pytrace=False)
