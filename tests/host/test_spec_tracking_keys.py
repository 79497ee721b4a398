"""The evaluation and tracking keys: defaults, and refusals that name the key and the fix."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import parse_spec


def error(text: str) -> str:
    with pytest.raises(UserError) as info:
        parse_spec(text, "job.yaml")
    return str(info.value)


def test_defaults_are_tensorboard_only_offline_wandb_and_evaluation_at_the_end():
    spec = parse_spec("", "job.yaml")
    assert spec.logging.trackers == ["tensorboard"] and spec.logging.wandb_mode == "offline"
    assert spec.logging.mlflow_tracking_uri is None and spec.checkpoint.keep_best is None
    assert (spec.train.eval_every_steps, spec.train.eval_batch_size) == (0, None)
    assert parse_spec("", "b.yaml").logging.trackers is not spec.logging.trackers  # not one shared list


def test_an_unknown_tracker_names_the_ones_there_are():
    text = error("logging:\n  trackers: [tensorboard, comet]\n")
    assert "logging.trackers.1" in text and "'tensorboard', 'mlflow' or 'wandb'" in text


def test_a_tracker_named_twice_is_refused():
    assert "mlflow named more than once; name each tracker once" in error("logging:\n  trackers: [mlflow, mlflow]\n")


def test_credentials_in_the_tracking_uri_are_refused_and_never_echoed():
    text = error("logging:\n  mlflow_tracking_uri: https://me:hunter22@mlflow.example.com\n")
    assert "logging.mlflow_tracking_uri" in text and "MLFLOW_TRACKING_PASSWORD" in text
    assert "hunter22" not in text


@pytest.mark.parametrize("value", ["accuracy", "accuracy:best", ":max", "a b:min"])
def test_keep_best_must_be_a_metric_and_a_direction(value):
    text = error(f"checkpoint:\n  keep_best: '{value}'\n")
    assert "checkpoint.keep_best" in text and "'accuracy:max' or 'loss:min'" in text
