"""A Slurm requeue continues the same tracked run: preempted (USR2), checkpointed, requeued and
resumed, the job is one TensorBoard run (every step once) and one MLflow run (the whole history,
named by the run id), and the rank log keeps both attempts."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.backends.slurm.test_submit import TRAIN, TWO_NODES, requeued_once_then_completed, submit, write_spec
from tests.helpers.jobs import wait_for_text
from tests.worker.test_tracking import mlflow_runs, tb_scalars

pytestmark = [pytest.mark.slurm]

STEPS = 32  # 1024 samples / 2 ranks / batch 16, one epoch


def test_a_requeued_job_is_one_run_in_tensorboard_and_mlflow(slurm, cancel_jobs, tmp_path):
    pytest.importorskip("mlflow", reason="pip install 'hpcgpu[mlflow]' (make venv installs it)")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = write_spec(tmp_path, {**TRAIN, "train": {**TRAIN["train"], "log_every": 1},
                                 "logging": {"progress": "lines", "tensorboard": True,
                                             "trackers": ["tensorboard", "mlflow"], "mlflow_tracking_uri": uri,
                                             "mlflow_experiment": "slurm"}})
    run_id, job_id, run_dir = submit(["-f", str(spec), *TWO_NODES], tmp_path, tmp_path / "home", cancel_jobs)
    rank0 = run_dir / "logs" / "rank0.log"
    wait_for_text(rank0, r"^step 3/32 ", 90)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    requeued_once_then_completed(slurm, job_id, run_dir, requeue_timeout_s=60)

    log = rank0.read_text()
    step = int(re.search(r"^hpcgpu: stopped at step (\d+) ", log, re.MULTILINE).group(1))
    assert 3 <= step < STEPS
    assert re.search(r"attempt 2 \(elastic restart 0, job restart 1\)", log), log

    assert not [p for p in (run_dir / "tb").iterdir() if p.is_dir()]
    assert [s for s, _ in tb_scalars(run_dir)["train/loss"]] == list(range(1, STEPS + 1))
    client, runs = mlflow_runs(uri)
    assert [(r.info.run_name, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    history = client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
