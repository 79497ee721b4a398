"""A small 2x2 sweep (learning rate x seed) of the slowed demo, and its plain runs to compare with."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers.jobs import SLOW_TRAIN

#: the slowed demo with 1 rank: 32 steps of 0.15 s, so a signal lands mid-training
SWEEP_TRAIN = {**SLOW_TRAIN, "name": "sw",
               "entry": {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 512, "delay_s": 0.15}}}
#: the grid, as the command line gives it
GRID_ARGS = ["--sweep", "train.lr=0.001,0.0003", "--sweep", "train.seed=1,2"]
#: each task's overrides as --set options, in task order
TASK_SETS = [["train.lr=0.001", "train.seed=1"], ["train.lr=0.001", "train.seed=2"],
             ["train.lr=0.0003", "train.seed=1"], ["train.lr=0.0003", "train.seed=2"]]


def hpcgpu(args: list[str], cwd: Path, home: Path, timeout: float = 180, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPCGPU_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, **popen)


def write_spec(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump(SWEEP_TRAIN))
    return path


def final_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["final_loss"]


def plain_losses(directory: Path) -> list[float]:
    """The final loss of a plain `run local --nproc 1` with each task's overrides, in task order."""
    spec = write_spec(directory)
    losses = []
    for sets in TASK_SETS:
        # without the demo's per-step sleep, which only gives signals time to land: same numbers
        sets = [*sets, "entry.task_args.delay_s=0"]
        out = hpcgpu(["run", "local", "-f", str(spec), "--nproc", "1", *[a for s in sets for a in ("--set", s)]],
                     directory, directory / "home")
        assert out.returncode == 0, out.stdout + out.stderr
        run_dir = re.search(r"run dir (\S+) \(logs/", out.stdout).group(1)
        losses.append(final_loss(Path(run_dir)))
    assert len(set(losses)) == 4, losses  # the overrides matter: each task is a different run
    return losses


def sweep_dir_of(record_dir: Path) -> dict:
    return json.loads((record_dir / "sweep.json").read_text())
