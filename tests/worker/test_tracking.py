"""Trackers, for real: TensorBoard event files read back, a real MLflow sqlite store, W&B in offline
mode (its files read back; nothing leaves the machine). A stopped and resumed Trainer run is one run
in each, with every step once; a tracker that fails warns once and training goes on."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest
import torch
from torch.utils.data import TensorDataset

from hpcgpu.worker import stop
from hpcgpu.worker import trainer as trainer_mod
from hpcgpu.worker.context import resolve_resume
from hpcgpu.worker.task import Task
from hpcgpu.worker.tracking import (RUN_ID_TAG, MlflowTracker, TensorBoardTracker, TrackerSetup, Trackers, failure,
                                    flat_params, open_trackers, wandb_run_id, without_credentials)
from tests.helpers import wandb_log
from tests.helpers.trainer_rig import context

TRAIN = {"batch_size": 2, "epochs": 2, "seed": 7, "log_every": 1, "eval_every_steps": 4}  # 16 samples: 16 steps


def task() -> Task:
    gen = torch.Generator().manual_seed(3)
    return Task(model=lambda: torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(4, 1)),
                dataset=TensorDataset(torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)),
                loss=torch.nn.functional.mse_loss,
                eval_dataset=TensorDataset(torch.randn(5, 4, generator=gen), torch.randn(5, 1, generator=gen)))


def train(tmp_path, monkeypatch, logging, stop_at=None, resume=False):
    """The real Trainer with its real Metrics and trackers; run id "r" whatever the attempt."""
    trainer = None
    monkeypatch.setattr(stop, "should_stop", lambda device=None: trainer is not None and trainer.step == stop_at)
    ctx = context(tmp_path, "r", train=TRAIN, distributed={"stop_check_every": 1},
                  logging={"tensorboard": True, **logging})
    if resume:
        resolve_resume(ctx, {})
    trainer = trainer_mod.Trainer(ctx, task())
    trainer.outcome = trainer.fit()
    return trainer


def tb_scalars(run_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_stopped_and_resumed_run_is_one_tensorboard_run_with_every_step_once(tmp_path, monkeypatch):
    first = train(tmp_path, monkeypatch, {}, stop_at=6)
    assert first.outcome.status == "stopped"
    second = train(tmp_path, monkeypatch, {}, resume=True)
    assert second.outcome.status == "done"
    assert [p.name for p in (tmp_path / "r").iterdir() if p.name == "tb"] == ["tb"]
    assert not [p for p in (tmp_path / "r" / "tb").iterdir() if p.is_dir()]  # one run: no sub-runs
    scalars = tb_scalars(tmp_path / "r")
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 17))  # continuous, no step twice
    assert [s for s, _ in scalars["eval/loss"]] == [4, 8, 12, 16]
    # the hparams record: the resolved training settings, with the final metrics at the last step
    assert scalars["hparams/final_loss"] == [(16, pytest.approx(second.outcome.final_loss))]
    assert scalars["hparams/eval/loss"] == [(16, pytest.approx(second.last_eval["loss"]))]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tmp_path / "r" / "tb"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = session.session_start_info.hparams
    assert hp["train.lr"].number_value == pytest.approx(0.1) and hp["train.batch_size"].number_value == 2
    assert hp["world_size"].number_value == 1 and hp["train.strategy"].string_value == "ddp"


def mlflow_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client, runs


def test_a_stopped_and_resumed_run_is_one_mlflow_run_with_the_whole_history(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="pip install 'hpcgpu[mlflow]' (make venv installs it)")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logging = {"trackers": ["tensorboard", "mlflow"], "mlflow_tracking_uri": uri, "mlflow_experiment": "exp"}
    train(tmp_path, monkeypatch, logging, stop_at=6)
    client, runs = mlflow_runs(uri)
    assert [(r.info.run_name, r.info.status) for r in runs] == [("r", "KILLED")]
    second = train(tmp_path, monkeypatch, logging, resume=True)
    client, runs = mlflow_runs(uri)
    assert len(runs) == 1
    run = runs[0]
    assert (run.info.run_name, run.info.status, run.data.tags[RUN_ID_TAG]) == ("r", "FINISHED", "r")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 17))
    assert run.data.metrics["train/loss"] == pytest.approx(second.outcome.final_loss)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/loss")] == [4, 8, 12, 16]
    assert run.data.params["train.lr"] == "0.1" and run.data.params["world_size"] == "1"
    assert client.get_experiment(run.info.experiment_id).name == "exp"


def test_wandb_offline_writes_one_run_id_per_attempt_folder_and_sends_nothing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb", reason="pip install 'hpcgpu[wandb]' (make venv installs it)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logging = {"trackers": ["wandb"], "wandb_project": "proj"}
    train(tmp_path, monkeypatch, logging, stop_at=6)
    second = train(tmp_path, monkeypatch, logging, resume=True)
    runs = sorted((tmp_path / "r" / "wandb").glob("offline-run-*"))
    said = capsys.readouterr()
    # one folder per attempt (`wandb sync` appends both to run "r"); on failure: what there is, and why
    assert len(runs) == 2, (runs, sorted(p.name for p in (tmp_path / "r").rglob("*"))[:40], said.err[-3000:])
    for folder in runs:
        assert [p.name for p in folder.glob("*.wandb")] == ["run-r.wandb"]  # both attempts: run id "r"

    def steps() -> list[dict]:
        return [row for folder in runs for row in wandb_log.history(folder / "run-r.wandb") if "train/loss" in row]

    # W&B's service process writes the log; give it a bounded moment to have written all of it
    deadline = time.monotonic() + 30
    while len(rows := steps()) < 16 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [int(row["_step"]) for row in rows] == list(range(1, 17)), said.err[-3000:]  # the second continues at 7
    assert float(rows[-1]["train/loss"]) == pytest.approx(second.outcome.final_loss)


class Failing:
    """A tracker whose every call fails, as a tracker whose server went away does."""

    name = "mlflow"

    def __init__(self):
        self.calls = 0

    def log(self, step, scalars):
        self.calls += 1
        raise ConnectionError("http://user:pw@host:5000 refused")


def test_a_failing_tracker_warns_once_is_dropped_and_the_others_go_on(tmp_path):
    said = []
    tb = TensorBoardTracker(TrackerSetup(names=("tensorboard",), run_id="x", run_dir=tmp_path))
    bad = Failing()
    trackers = Trackers([bad, tb], say=said.append)
    for step in range(1, 4):
        trackers.log(step, {"train/loss": 1.0 / step, "train/mfu": None})
    trackers.close("done")
    assert bad.calls == 1
    assert said == ["hpcgpu: warning: tracker mlflow failed logging step 1: ConnectionError: "
                    "http://<redacted>@host:5000 refused; it is off for the rest of this attempt, training goes on"]
    assert [s for s, _ in tb_scalars(tmp_path)["train/loss"]] == [1, 2, 3]


def test_an_mlflow_server_that_is_not_there_warns_once_at_open(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    said = []
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    setup = TrackerSetup(names=("mlflow", "tensorboard"), run_id="x", run_dir=tmp_path,
                         mlflow={"tracking_uri": "http://127.0.0.1:9"})  # the discard port: nobody listens
    trackers = open_trackers(setup, say=said.append)
    assert [t.name for t in trackers.open] == ["tensorboard"]
    assert len(said) == 1 and said[0].startswith("hpcgpu: warning: tracker mlflow failed to open: ")


def test_the_warning_names_the_extra_to_install_when_a_package_is_missing():
    text = failure("wandb", "to open", ModuleNotFoundError("No module named 'wandb'"))
    assert "(pip install 'hpcgpu[wandb]')" in text


def test_helpers():
    assert flat_params({"train": {"lr": 0.1, "max_steps": None}, "entry": {"task_args": {"n": [1]}}}) == \
        {"train.lr": 0.1, "train.max_steps": "None", "entry.task_args.n": "[1]"}
    assert without_credentials("see https://a:b@h/x and s3://k@b") == "see https://<redacted>@h/x and s3://<redacted>@b"
    assert wandb_run_id("demo.v2-20261202-101010-ab12") == "demo-v2-20261202-101010-ab12"


def test_mlflow_params_are_logged_when_the_run_is_made_not_again(tmp_path):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path}/m.db"
    setup = TrackerSetup(names=("mlflow",), run_id="x", run_dir=tmp_path, mlflow={"tracking_uri": uri},
                         params={"train.lr": 0.1})
    MlflowTracker(setup).close("stopped")
    # a resume with a changed setting (a warning in the log) must not fail the tracker: MLflow refuses
    # a param logged twice with two values
    again = MlflowTracker(dataclasses.replace(setup, params={"train.lr": 0.2}))
    again.log(1, {"a": 1.0})
    again.close("done")
    client, runs = mlflow_runs(uri)
    assert len(runs) == 1 and runs[0].data.params == {"train.lr": "0.1"} and runs[0].info.status == "FINISHED"
    assert os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") is not None


def test_the_default_mlflow_store_is_private_to_the_user(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    before = os.umask(0o022)  # a umask that would leave a new file readable by everyone
    try:
        tracker = MlflowTracker(TrackerSetup(names=("mlflow",), run_id="x", run_dir=run_dir, params={}))
        tracker.log(1, {"a": 1.0})
        tracker.close("done")
    finally:
        os.umask(before)
    store = tmp_path / "runs" / "mlflow.db"  # beside the run dirs: one store for every run under logging.dir
    assert store.stat().st_size > 0
    assert store.stat().st_mode & 0o777 == 0o600
