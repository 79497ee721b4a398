"""A Slurm requeue continues the same tracked run: preempted (USR2), checkpointed, requeued and
resumed, the job is one TensorBoard run (every step once) and one MLflow run (the whole history,
named by the run id), and the rank log keeps both attempts.

The job is the preempted one of test_submit.py's preemption test (tracked to both at every step):
one job per session, which each module checks its own facts of (preempted_tracked_run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.backends.slurm.test_submit import preempted_tracked_run
from tests.worker.test_tracking import mlflow_runs, tb_scalars

pytestmark = [pytest.mark.slurm]

STEPS = 32  # 1024 samples / 2 ranks / batch 16, one epoch


def test_a_requeued_job_is_one_run_in_tensorboard_and_mlflow(slurm_cluster, tmp_path_factory):
    pytest.importorskip("mlflow", reason="pip install 'hpcgpu[mlflow]' (make venv installs it)")
    run = preempted_tracked_run(tmp_path_factory)
    run_id, run_dir, uri = run["run_id"], Path(run["run_dir"]), run["mlflow_uri"]
    assert run["trackers"] == ["tensorboard", "mlflow"]

    log = (run_dir / "logs" / "rank0.log").read_text()
    step = int(re.search(r"^hpcgpu: stopped at step (\d+) ", log, re.MULTILINE).group(1))
    assert 3 <= step < STEPS  # the signal came after step 3 (log_every 1)
    assert re.search(r"attempt 2 \(elastic restart 0, job restart 1\)", log), log

    assert not [p for p in (run_dir / "tb").iterdir() if p.is_dir()]
    assert [s for s, _ in tb_scalars(run_dir)["train/loss"]] == list(range(1, STEPS + 1))
    client, runs = mlflow_runs(uri)
    assert [(r.info.run_name, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    history = client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
