"""hpcgpu.dist for scripts: run_id() is the plan's run id; log_metrics() goes to the spec's trackers
from rank 0 only, and a later attempt continues the same TensorBoard run from the step it resumes at."""

from __future__ import annotations

import pytest

from hpcgpu import dist
from hpcgpu.worker import api, context as context_mod
from tests.helpers.trainer_rig import context
from tests.worker.test_tracking import mlflow_runs, tb_scalars


@pytest.fixture
def attempt(tmp_path):
    """Install a rank's context as a script's process would have it; each call is a new process."""

    def start(rank: int = 0, **logging):
        api._close_trackers()
        ctx = context(tmp_path, "script-run", rank=rank, world_size=2, logging={"tensorboard": True, **logging})
        context_mod.set_current(ctx)
        return ctx

    yield start
    api._close_trackers()
    context_mod.set_current(None)


def test_run_id_is_the_plans_run_id(attempt):
    ctx = attempt()
    assert dist.run_id() == ctx.plan.run_id == "script-run"


def test_a_killed_attempt_and_its_resume_are_one_curve_without_a_step_twice(attempt, tmp_path):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path}/m.db"
    trackers = {"trackers": ["tensorboard", "mlflow"], "mlflow_tracking_uri": uri}
    attempt(**trackers)
    for step in range(1, 9):  # got to step 8; its last checkpoint was at step 5
        dist.log_metrics(step, {"loss": 1.0 / step})
    attempt(rank=1, **trackers)
    dist.log_metrics(6, {"loss": 99.0})  # another rank: nothing
    attempt(**trackers)
    for step in range(6, 11):  # the resumed attempt: steps 6 to 10 again
        dist.log_metrics(step, {"loss": 2.0 / step})
    api._close_trackers()
    loss = tb_scalars(tmp_path / "script-run")["loss"]
    assert [s for s, _ in loss] == list(range(1, 11))
    assert [v for s, v in loss if s >= 6] == pytest.approx([2.0 / s for s in range(6, 11)])
    client, runs = mlflow_runs(uri)
    assert [r.info.run_name for r in runs] == ["script-run"] and runs[0].info.status == "FINISHED"
    # MLflow keeps every point it was sent: the killed attempt's steps 6-8 stay in its history
    steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "loss"))
    assert steps == [1, 2, 3, 4, 5, 6, 6, 7, 7, 8, 8, 9, 10]
