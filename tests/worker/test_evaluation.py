"""Evaluation: every sample on exactly one rank, metrics summed over ranks before the division, so
2 real gloo ranks over an uneven set give what one process gives (the pair of tests/helpers/gloo_pair.py,
shared with other modules' rank-side checks); the RNG stream is left as it was."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from hpcgpu.contract.errors import UserError
from hpcgpu.examples import mlp
from hpcgpu.worker.evaluation import EvalShard, evaluate, loss_per_sample, per_sample
from hpcgpu.worker.strategy import wrap
from hpcgpu.worker.trainer import _to
from tests.helpers.gloo_pair import gloo_pair_results

# 1001 samples in batches of 100: rank 0 gets 501 (6 batches, the last of 1), rank 1 gets 500 (5 batches)
N_EVAL, BATCH = 1001, 100


def _task():
    return mlp.make_task(n_samples=64, n_eval=N_EVAL, dropout=0.5)


def _model():
    torch.manual_seed(5)
    return _task().model()


def _evaluate(model, world: int, rank: int, pad: bool = False) -> dict:
    task = _task()
    cpu = torch.device("cpu")
    return evaluate(model, task.eval_dataset, task.eval_metrics, BATCH, world, rank, cpu, cpu, _to,
                    _no_autocast, pad_forwards=pad)


class _no_autocast:
    """fp32: the autocast context evaluate() enters (the Trainer passes strategy.autocast)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def two_rank_evaluation(rank: int, world: int) -> dict:
    """On each of the two ranks of tests/helpers/gloo_pair.py: the plain model (as under DDP, whose
    module evaluates), then the FSDP-wrapped one."""
    got = {"ddp": _evaluate(_model(), world, rank)}
    # each FSDP forward all-gathers: the rank with fewer batches must pad
    fsdp = wrap(_model(), "fsdp", torch.device("cpu"), None, "fp32", [])
    got["fsdp"] = _evaluate(fsdp, world, rank, pad=True)
    return got


def test_two_ranks_over_an_uneven_set_equal_one_process_with_ddp_and_fsdp(tmp_path_factory):
    alone = _evaluate(_model(), 1, 0)
    assert alone["samples"] == N_EVAL
    assert 0 < alone["accuracy"] < 1 and alone["loss"] > 0

    ranks = gloo_pair_results(tmp_path_factory, "tests.worker.test_evaluation:two_rank_evaluation")
    assert len(ranks) == 2
    for results in ranks:
        assert results.keys() == {"ddp", "fsdp"}, results.get("error")
        for strategy, got in results.items():
            assert got["samples"] == N_EVAL, strategy  # the short last batch counted once, nothing padded or dropped
            assert got["loss"] == pytest.approx(alone["loss"], abs=1e-6), strategy
            assert got["accuracy"] == pytest.approx(alone["accuracy"], abs=1e-6), strategy


def test_shards_cover_every_sample_once_and_differ_by_at_most_one():
    for n, world in [(1001, 2), (10, 3), (7, 7), (100, 8)]:
        shards = [list(EvalShard(n, world, r)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert [len(EvalShard(n, world, r)) for r in range(world)] == list(map(len, shards))


def test_evaluation_leaves_the_rng_stream_and_the_training_mode_as_they_were():
    model = _model()
    model.train()

    def noisy_metrics(output, target):  # a metric that samples: its draws must not leak into training
        return {"noise": torch.rand(len(target))}

    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    cpu = torch.device("cpu")
    got = evaluate(model, _task().eval_dataset, noisy_metrics, BATCH, 1, 0, cpu, cpu, _to, _no_autocast)
    assert 0.4 < got["noise"] < 0.6 and got["samples"] == N_EVAL
    assert torch.equal(torch.rand(3), expected)
    assert model.training


def test_the_default_metric_is_the_tasks_loss_and_exact_over_uneven_batches():
    data = TensorDataset(torch.zeros(5, 1), torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]]))
    zero = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(zero.weight), torch.nn.init.zeros_(zero.bias)
    cpu = torch.device("cpu")
    got = evaluate(zero, data, loss_per_sample(torch.nn.functional.mse_loss), 2, 1, 0, cpu, cpu, _to, _no_autocast)
    # batches [1,2], [3,4], [5]: per-sample squared errors average to (1+4+9+16+25)/5 = 11
    assert got == {"loss": 11.0, "samples": 5}


def test_a_metric_that_is_not_per_sample_is_refused_with_the_fix():
    with pytest.raises(UserError, match=r"'acc' with shape \(\): give one value per sample"):
        per_sample({"acc": torch.tensor(0.5)}, 4)


def test_an_evaluation_set_smaller_than_the_world_is_refused():
    cpu = torch.device("cpu")
    with pytest.raises(UserError, match="fewer than the 3 ranks"):
        evaluate(_model(), TensorDataset(torch.zeros(2, 32), torch.zeros(2)), None, 1, 3, 0, cpu, cpu, _to,
                 _no_autocast)
