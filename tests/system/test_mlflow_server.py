"""A real `mlflow server` on loopback, started here: the Trainer logs to it over HTTP; the server killed
mid-run costs one warning and nothing else: training finishes, TensorBoard has every step, and the
server, started again on its store, holds what was sent before it went away.

The server needs the full `mlflow` package (pandas, Flask, ...: about 600 MB), which `make venv` does
not install; `make mlflow-server` puts it in a venv of its own (.venv-mlflow-server), which this test
finds, as it finds HPCGPU_MLFLOW_SERVER (the path of an `mlflow` command). Without either it skips;
with HPCGPU_REQUIRE_MLFLOW_SERVER=1 a skip is a failure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from hpcgpu.worker import stop
from hpcgpu.worker import trainer as trainer_mod
from hpcgpu.worker.task import Task
from tests.helpers.trainer_rig import context
from tests.worker.test_tracking import tb_scalars

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def server_command() -> str:
    found = os.environ.get("HPCGPU_MLFLOW_SERVER") or shutil.which("mlflow", path=str(REPO / ".venv-mlflow-server" / "bin"))
    if not found:
        if os.environ.get("HPCGPU_REQUIRE_MLFLOW_SERVER") == "1":
            pytest.fail("no mlflow server: run `make mlflow-server` or set HPCGPU_MLFLOW_SERVER")
        pytest.skip("no mlflow server: `make mlflow-server` installs one (.venv-mlflow-server)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_server(mlflow: str, store: Path, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            kill(proc)
            raise AssertionError(f"mlflow server did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def kill(proc: subprocess.Popen) -> None:
    """The server and its workers, at once (a crash, not a shutdown)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def task() -> Task:
    gen = torch.Generator().manual_seed(3)
    return Task(model=lambda: torch.nn.Linear(4, 1),
                dataset=TensorDataset(torch.randn(32, 4, generator=gen), torch.randn(32, 1, generator=gen)),
                loss=torch.nn.functional.mse_loss,
                eval_dataset=TensorDataset(torch.randn(7, 4, generator=gen), torch.randn(7, 1, generator=gen)))


def test_the_server_going_away_mid_run_costs_one_warning_and_training_finishes(tmp_path, monkeypatch, capsys):
    mlflow = server_command()
    port, store, log = free_port(), tmp_path / "server.db", tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    server = start_server(mlflow, store, port, log)
    trainer = None
    killed_at = []

    def should_stop(device=None):  # asked after every step: the server dies after step 5
        if trainer is not None and trainer.step == 5 and not killed_at:
            kill(server)
            killed_at.append(trainer.step)
        return False

    try:
        monkeypatch.setattr(stop, "should_stop", should_stop)
        ctx = context(tmp_path, "srv", train={"batch_size": 2, "epochs": 1, "log_every": 1, "eval_every_steps": 4},
                      distributed={"stop_check_every": 1},
                      logging={"tensorboard": True, "trackers": ["tensorboard", "mlflow"], "mlflow_tracking_uri": url,
                               "mlflow_experiment": "srv"})
        trainer = trainer_mod.Trainer(ctx, task())
        outcome = trainer.fit()
    finally:
        kill(server)

    assert killed_at == [5]
    assert (outcome.status, outcome.step) == ("done", 16)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "tracker mlflow failed" in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("hpcgpu: warning: tracker mlflow failed logging step 6: ")
    assert [s for s, _ in tb_scalars(tmp_path / "srv")["train/loss"]] == list(range(1, 17))

    # the store kept what reached the server before it died
    server = start_server(mlflow, store, port, log)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(url)
        (run,) = client.search_runs([client.get_experiment_by_name("srv").experiment_id])
        assert run.info.run_name == "srv" and run.info.status == "RUNNING"  # it never heard the end
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 2, 3, 4, 5]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/loss")] == [4]
    finally:
        kill(server)
