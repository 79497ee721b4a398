"""How the Trainer sets itself up, in one process on the CPU: batches moved to the device whatever
their nesting, deterministic kernels, the device default, its own checks of the setup (for specs
that skipped validation), per-rank seeds, the start line, `dp` without GPUs or a plan, a world-size-1
process group (DDP, the mean over ranks, the RNG gather), and run_task with the spec's task_args."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.specview import SpecView
from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker import trainer as trainer_mod
from tests.helpers.trainer_rig import const_task, context, fit, rig


def test_batches_move_to_the_device_in_any_nesting_of_lists_tuples_and_dicts():
    batch = [torch.ones(2), (torch.zeros(1), {"mask": torch.ones(3), "ids": [torch.arange(2)]}), "label", 7]
    moved = trainer_mod._to(batch, torch.device("meta"))  # the meta device: no memory, but a device all the same
    assert type(moved) is list and type(moved[1]) is tuple
    assert moved[0].device.type == "meta" and moved[1][0].device.type == "meta"
    assert set(moved[1][1]) == {"mask", "ids"}
    assert moved[1][1]["mask"].device.type == "meta" and moved[1][1]["mask"].shape == (3,)
    assert moved[1][1]["ids"][0].device.type == "meta"
    assert moved[2:] == ["label", 7]


@pytest.fixture
def deterministic_flags():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch._C._set_deterministic_algorithms(False, warn_only=False)
    yield
    torch._C._set_deterministic_algorithms(saved[0], warn_only=saved[1])


def test_cpu_runs_use_deterministic_kernels_warning_only(deterministic_flags):
    trainer_mod._deterministic()
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_a_torch_without_the_private_switch_gets_the_public_one_with_the_same_settings(deterministic_flags,
                                                                                      monkeypatch):
    calls = []
    monkeypatch.delattr(torch._C, "_set_deterministic_algorithms")
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append((a, k)))
    trainer_mod._deterministic()
    assert calls == [((True,), {"warn_only": True})]


def test_a_cpu_trainer_switches_deterministic_kernels_on(tmp_path, monkeypatch, deterministic_flags):
    rig(monkeypatch)
    fit(context(tmp_path, "det", train={"batch_size": 8}), const_task())
    assert torch.are_deterministic_algorithms_enabled()


def test_without_a_device_the_trainer_runs_on_the_cpu(tmp_path):
    ctx = context(tmp_path, "nodevice")
    ctx.device = None
    assert trainer_mod.Trainer(ctx, const_task()).device == torch.device("cpu")


def unvalidated(tmp_path, name, **train):
    """A context whose spec was changed after validation (as a hand-made or stale plan could be)."""
    ctx = context(tmp_path, name, train={"batch_size": 8})
    data = ctx.spec.model_dump(mode="json")
    data["train"].update(train)
    ctx.spec = SpecView(data)
    return ctx


def test_fp16_on_the_cpu_is_refused_by_the_trainer_itself(tmp_path):
    with pytest.raises(UserError, match="train.precision fp16 needs CUDA GPUs; this rank runs on cpu"):
        trainer_mod.Trainer(unvalidated(tmp_path, "fp16", precision="fp16"), const_task())._build()


def test_dp_on_several_ranks_is_refused_by_the_trainer_itself(tmp_path):
    ctx = context(tmp_path, "dp2", rank=0, world_size=2, train={"batch_size": 8, "strategy": "dp"})
    with pytest.raises(UserError, match="train.strategy dp runs one process that drives all local GPUs, but 2 ranks"):
        trainer_mod.Trainer(ctx, const_task())._build()


def test_dp_on_a_cpu_without_a_plan_trains_the_plain_model(tmp_path, monkeypatch):
    rig(monkeypatch)
    ctx = context(tmp_path, "dp", train={"batch_size": 8, "strategy": "dp"})
    ctx.plan = None  # started by another launcher
    t = fit(ctx, const_task())
    assert (t.outcome.status, t.outcome.final_loss, t.replicas) == ("done", 0.25, 1)
    assert type(t.model).__name__ == "Const"


def test_each_rank_draws_from_the_seed_plus_its_rank(tmp_path):
    draws = []
    for rank in (0, 1):
        t = trainer_mod.Trainer(context(tmp_path, f"seed{rank}", rank=rank, world_size=2,
                                        train={"batch_size": 4, "seed": 7}), const_task())
        t._build()
        draws.append(torch.rand(4))
    torch.manual_seed(7)
    assert torch.equal(draws[0], torch.rand(4))
    torch.manual_seed(8)
    assert torch.equal(draws[1], torch.rand(4))


def test_the_start_line_states_the_effective_batch_and_the_scaled_lr(tmp_path, monkeypatch, capsys):
    rig(monkeypatch)
    fit(context(tmp_path, "announce", train={"batch_size": 4, "grad_accum": 2, "lr_scaling": "linear"}), const_task())
    assert ("hpcgpu: ddp on 1 rank(s) x cpu, fp32; effective batch 4 x 1 rank(s) x 2 accum = 8 samples/step; "
            "lr 0.1 -> 0.2 (linear scaling); 4 steps (4 per epoch)") in capsys.readouterr().out


def test_run_task_builds_the_specs_task_with_its_task_args(tmp_path, monkeypatch):
    rig(monkeypatch)
    ctx = context(tmp_path, "entry", train={"batch_size": 4},
                  entry={"task": "tests.helpers.trainer_rig:const_task", "task_args": {"b": 1.5, "samples": 8}})
    outcome = trainer_mod.run_task(ctx)
    assert (outcome.status, outcome.step, outcome.final_loss) == ("done", 2, 2.25)  # 8 samples / 4; 1.5**2


@pytest.fixture
def one_rank_group(tmp_path):
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    tdist.destroy_process_group()


def test_in_a_process_group_ddp_wraps_the_model_and_the_numbers_stay_exact(tmp_path, monkeypatch, one_rank_group):
    rig(monkeypatch)
    t = fit(context(tmp_path, "ddp", train={"batch_size": 4, "grad_accum": 2}), const_task())
    assert isinstance(t.model, torch.nn.parallel.DistributedDataParallel)
    assert t.outcome.final_loss == 0.25  # the mean over 1 rank of 0.5**2
    (rng,) = ckpt.load_state(tmp_path / "ddp" / "checkpoints" / "step_00000004")["rng"]  # gathered from 1 rank
    assert set(rng) >= {"python", "numpy", "torch"}


def test_the_mean_over_ranks_divides_the_all_reduced_sum_by_the_world_size(tmp_path, monkeypatch):
    t = trainer_mod.Trainer(context(tmp_path, "mean", rank=0, world_size=2), const_task())
    monkeypatch.setattr(trainer_mod, "is_distributed", lambda: True)
    monkeypatch.setattr(tdist, "all_reduce", lambda tensor, *a, **k: tensor.add_(3.0))  # the other rank's 3.0
    assert t._mean_over_ranks(torch.tensor(1.0)) == 2.0
