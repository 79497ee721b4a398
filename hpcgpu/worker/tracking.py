"""Rank 0's experiment trackers: one call sends metrics to each tracker the spec names (TensorBoard,
MLflow, Weights & Biases), all under the run id, so a restarted, resumed or requeued run continues
the same tracked run. A tracker that fails (a server gone, a package missing) says so once and is
dropped; training never stops for it. Tracker packages are imported only when named."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

TENSORBOARD, MLFLOW, WANDB = "tensorboard", "mlflow", "wandb"
#: the tag (MLflow) under which a tracked run records the hpcgpu run id it belongs to
RUN_ID_TAG = "hpcgpu.run_id"
_URL_CREDENTIALS = re.compile(r"(//)[^/?#@\s]+@")


@dataclass
class TrackerSetup:
    """What rank 0 opens its trackers with: names, the run's identity, the spec's tracker settings."""

    names: tuple[str, ...]
    run_id: str
    run_dir: Path
    start_step: int = 0
    params: dict[str, Any] = field(default_factory=dict)  # the hyper-parameters, flat: {"train.lr": 0.001}
    mlflow: dict[str, Any] = field(default_factory=dict)  # logging.mlflow
    wandb: dict[str, Any] = field(default_factory=dict)  # logging.wandb
    project: str = "hpcgpu"  # the spec's name: the default experiment / project


def setup_from_spec(spec: dict[str, Any], run_id: str, run_dir: Path, world_size: int,
                    start_step: int = 0) -> TrackerSetup:
    """The trackers a resolved spec names (tensorboard left out with logging.tensorboard false),
    their settings, and the hyper-parameters: the train section, the task and the world size.
    Keys a spec resolved before they existed (a resumed older run) read as their defaults."""
    log = spec["logging"]
    names = tuple(n for n in log.get("trackers", [TENSORBOARD]) if n != TENSORBOARD or log.get("tensorboard", True))
    entry = spec.get("entry", {})
    params = flat_params({"train": spec.get("train", {}),
                          "entry": {"task": entry.get("task"), "task_args": entry.get("task_args") or {}}})
    params["world_size"] = world_size
    return TrackerSetup(names=names, run_id=run_id, run_dir=run_dir, start_step=start_step, params=params,
                        mlflow={"tracking_uri": log.get("mlflow_tracking_uri"), "experiment": log.get("mlflow_experiment")},
                        wandb={"project": log.get("wandb_project"), "entity": log.get("wandb_entity"),
                               "mode": log.get("wandb_mode")},
                        project=spec.get("name") or "hpcgpu")


def flat_params(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; values a tracker takes (numbers, text, bools)."""
    if isinstance(data, dict):
        return {k: v for key, sub in data.items() for k, v in flat_params(sub, f"{prefix}{key}.").items()}
    key = prefix.rstrip(".")
    if data is None or isinstance(data, (list, tuple)):
        return {key: str(data)}
    return {key: data}


def without_credentials(text: str) -> str:
    """A message with `scheme://user:password@` turned into `scheme://<redacted>@`."""
    return _URL_CREDENTIALS.sub(r"\1<redacted>@", text)


class TensorBoardTracker:
    """Events in `<run dir>/tb`: one directory per run id, so every attempt appends to the same run."""

    name = TENSORBOARD

    def __init__(self, setup: TrackerSetup):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: the steps an earlier attempt logged after the checkpoint this one resumes from
        # (a killed one got further) are hidden, so the curve has no step twice. The checkpoint's own
        # step stays: this attempt starts after it (purging from it dropped its point from the curve).
        self.writer = SummaryWriter(str(setup.run_dir / "tb"), purge_step=setup.start_step + 1 if setup.start_step else None)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def hparams(self, params: dict[str, Any], final: dict[str, float], step: int) -> None:
        """The HParams plugin's record in this run's own event file (SummaryWriter.add_hparams would
        open a new run for it), its metrics as `hparams/<name>` scalars at the last step."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {f"hparams/{k}": v for k, v in final.items()}
        for summary in hparams(params, metrics):
            self.writer.file_writer.add_summary(summary)
        self.log(step, metrics)

    def close(self, status: str) -> None:
        self.writer.close()


#: rank 0's MLflow client: 2 retries 1 s and 2 s apart, 20 s per request
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def private_file(path: Path) -> Path:
    """Create path empty and private to the user (0600) unless it exists: the default MLflow store
    holds every run's parameters and metrics, and SQLite gives its journal the database's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    return path


class MlflowTracker:
    """One MLflow run per hpcgpu run, found again by its `hpcgpu.run_id` tag on every attempt."""

    name = MLFLOW

    def __init__(self, setup: TrackerSetup):
        # MLflow retries a refused request 7 times with doubling waits (minutes) by default: a server
        # gone would stall training that long before the one warning. The user's values win.
        for name, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient

        cfg = setup.mlflow
        uri = cfg.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{private_file(setup.run_dir.parent.absolute() / 'mlflow.db')}"
        self.client = MlflowClient(uri)
        name = cfg.get("experiment") or setup.project
        experiment = self.client.get_experiment_by_name(name)
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        found = self.client.search_runs([exp_id], f"tags.`{RUN_ID_TAG}` = '{setup.run_id}'", max_results=1)
        if found:
            self.id = found[0].info.run_id
            self.client.update_run(self.id, status="RUNNING")
        else:
            run = self.client.create_run(exp_id, run_name=setup.run_id, tags={RUN_ID_TAG: setup.run_id})
            self.id = run.info.run_id
            # params only when the run is made: MLflow refuses a param logged again with another value
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in sorted(setup.params.items())]
            for i in range(0, len(params), 100):  # log_batch takes at most 100 params a call
                self.client.log_batch(self.id, params=params[i:i + 100])

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()])

    def hparams(self, params: dict[str, Any], final: dict[str, float], step: int) -> None:
        pass  # the params went in when the run was made; the final metrics are the histories' last points

    def close(self, status: str) -> None:
        self.client.set_terminated(self.id, {"done": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED"))


def wandb_run_id(run_id: str) -> str:
    """W&B run ids take letters, digits, '-' and '_' (hpcgpu's may have '.')."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", run_id)


class WandbTracker:
    """A W&B run whose id is the run id (resume="allow": each attempt continues it); offline unless
    logging.wandb.mode is online (WANDB_API_KEY from the environment, never from the spec)."""

    name = WANDB

    def __init__(self, setup: TrackerSetup):
        import wandb

        cfg = setup.wandb
        self.run = wandb.init(project=cfg.get("project") or setup.project, entity=cfg.get("entity"),
                              id=wandb_run_id(setup.run_id), name=setup.run_id, resume="allow",
                              dir=str(setup.run_dir), mode=cfg.get("mode") or "offline", config=setup.params,
                              settings=wandb.Settings(console="off", quiet=True))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def hparams(self, params: dict[str, Any], final: dict[str, float], step: int) -> None:
        self.run.summary.update(final)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status in ("done", "stopped") else 1)


KINDS: dict[str, Callable[[TrackerSetup], Any]] = {TENSORBOARD: TensorBoardTracker, MLFLOW: MlflowTracker,
                                                   WANDB: WandbTracker}
#: what to install when a tracker's package is missing
EXTRAS = {MLFLOW: "pip install 'hpcgpu[mlflow]'", WANDB: "pip install 'hpcgpu[wandb]'",
          TENSORBOARD: "pip install tensorboard"}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Trackers:
    """The fan-out: every call goes to each open tracker; the first failure of one drops it, with one warning."""

    def __init__(self, trackers: list, say: Callable[[str], None] = _say):
        self.open, self.say = list(trackers), say

    def _each(self, what: str, call: Callable[[Any], None]) -> None:
        for tracker in list(self.open):
            try:
                call(tracker)
            except Exception as e:  # noqa: BLE001 - any failure of a tracker, never of training
                self.open.remove(tracker)
                self.say(failure(tracker.name, what, e))

    def log(self, step: int, scalars: dict[str, Optional[float]]) -> None:
        values = {k: float(v) for k, v in scalars.items() if v is not None}
        if values:
            self._each(f"logging step {step}", lambda t: t.log(step, values))

    def hparams(self, params: dict[str, Any], final: dict[str, Optional[float]], step: int) -> None:
        values = {k: float(v) for k, v in final.items() if v is not None}
        self._each("writing the hyper-parameters", lambda t: t.hparams(params, values, step))

    def close(self, status: str) -> None:
        self._each("closing", lambda t: t.close(status))
        self.open = []


def failure(name: str, what: str, error: BaseException) -> str:
    """The one warning a failing tracker gets."""
    hint = f" ({EXTRAS[name]})" if isinstance(error, ImportError) and name in EXTRAS else ""
    why = without_credentials(f"{type(error).__name__}: {error}".splitlines()[0][:300])
    return (f"hpcgpu: warning: tracker {name} failed {what}: {why}{hint}; it is off for the rest of "
            "this attempt, training goes on")


def open_trackers(setup: TrackerSetup, say: Callable[[str], None] = _say) -> Trackers:
    """Open each named tracker; one that cannot open is left out with its one warning."""
    opened = []
    for name in setup.names:
        try:
            opened.append(KINDS[name](setup))
        except Exception as e:  # noqa: BLE001 - a tracker never stops training
            say(failure(name, "to open", e))
    return Trackers(opened, say)
