"""End to end with real ranks: `hpcgpu run local` stopped with SIGTERM and continued with `--resume`
is one run in TensorBoard (one curve, every step once) and one run in MLflow (the whole history),
both under the run id; evaluation ran; the rank logs keep both attempts, each under its header; and
the parameters equal an uninterrupted run's (which tracks nothing: trackers only watch, so they must
not change what is trained; and logging costs that run seconds of CPU for nothing asserted)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hpcgpu.worker import checkpoint as ckpt
from tests.worker.test_tracking import mlflow_runs, tb_scalars

pytestmark = pytest.mark.slow

STEPS = 64  # 1024 samples / 2 ranks / batch 16 = 32 steps per epoch, 2 epochs


def spec(tmp_path: Path, delay_s: float) -> dict:
    return {"name": "trk",
            "entry": {"task": "hpcgpu.examples.mlp:make_task",
                      "task_args": {"n_samples": 1024, "n_eval": 101, "delay_s": delay_s}},
            "train": {"batch_size": 16, "epochs": 2, "log_every": 1, "seed": 7, "eval_every_steps": 16},
            "checkpoint": {"every_steps": 10},
            "distributed": {"stop_check_every": 1},
            "logging": {"progress": "lines", "trackers": ["tensorboard", "mlflow"],
                        "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "mlflow_experiment": "e2e"}}


def untracked(spec: dict) -> dict:
    """The same run logging to no tracker: the uninterrupted reference, of which only the parameters
    are asserted (mlflow's import and store and TensorBoard cost a launch about 5 CPU-s)."""
    return {**spec, "logging": {"progress": "lines", "trackers": [], "tensorboard": False}}


def hpcgpu(args, cwd: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "HPCGPU_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_dirs(base: Path) -> list[Path]:
    runs = base / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def logged_step(run_dir: Path) -> int:
    path = run_dir / "logs" / "rank0.log"
    steps = re.findall(r"^step (\d+)/", path.read_text(), re.M) if path.exists() else []
    return int(steps[-1]) if steps else 0


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def final_params(run_dir: Path) -> dict:
    newest = ckpt.list_checkpoints(run_dir / "checkpoints")[0][1]
    assert newest.name == ckpt.step_dir_name(STEPS)
    return ckpt.load_state(newest)["model"]


def test_sigterm_then_resume_is_one_tracked_run_and_ends_like_an_uninterrupted_one(tmp_path):
    whole_base, base = tmp_path / "whole", tmp_path / "parts"
    for b in (whole_base, base):
        b.mkdir()
    (whole_base / "job.yaml").write_text(yaml.safe_dump(untracked({**spec(whole_base, 0.0), "name": "whole"})))
    whole = hpcgpu(["run", "local", "-f", "job.yaml", "--nproc", "2"], whole_base, whole_base / "home")
    out = whole.communicate(timeout=300)[0]
    assert whole.returncode == 0, out

    (base / "job.yaml").write_text(yaml.safe_dump(spec(base, 0.03)))
    first = hpcgpu(["run", "local", "-f", "job.yaml", "--nproc", "2"], base, base / "home")
    wait_until(lambda: run_dirs(base) and logged_step(run_dirs(base)[0]) >= 20, 180, "step 20")
    run_dir = run_dirs(base)[0]
    first.send_signal(signal.SIGTERM)
    out = first.communicate(timeout=180)[0]
    assert first.returncode == 75, out
    stopped = json.loads((run_dir / "exit" / "rank0.json").read_text())["step"]
    assert 20 <= stopped < STEPS

    second = hpcgpu(["run", "local", "--resume", run_dir.name], base, base / "home")
    out = second.communicate(timeout=300)[0]
    assert second.returncode == 0, out
    assert run_dirs(base) == [run_dir]  # the same run, not a new one

    # TensorBoard: one run (no sub-runs), every step once, eval where it was due
    assert not [p for p in (run_dir / "tb").iterdir() if p.is_dir()]
    scalars = tb_scalars(run_dir)
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, STEPS + 1))
    assert [s for s, _ in scalars["eval/accuracy"]] == [16, 32, 48, 64]
    assert scalars["hparams/final_loss"][0][0] == STEPS

    # MLflow: one run named by the run id, finished, the whole history once (the stop checkpointed the
    # step it stopped at, so the resumed attempt starts after it)
    client, runs = mlflow_runs(f"sqlite:///{base}/mlflow.db")
    assert [(r.info.run_name, r.info.status) for r in runs] == [(run_dir.name, "FINISHED")]
    history = client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
    assert runs[0].data.metrics["eval/accuracy"] == pytest.approx(scalars["eval/accuracy"][-1][1], rel=1e-6)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["samples"] == 101 and summary["eval"]["step"] == STEPS

    # both attempts' lines are in the rank logs, each attempt under its own header
    log = (run_dir / "logs" / "rank0.log").read_text()
    assert len(re.findall(r"^==== hpcgpu rank ", log, re.M)) == 2, log[:2000]
    assert f"step {stopped}/" in log and f"step {STEPS}/" in log

    # evaluation on, stopped and resumed: the same parameters as the uninterrupted run
    a, b = final_params(run_dirs(whole_base)[0]), final_params(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
