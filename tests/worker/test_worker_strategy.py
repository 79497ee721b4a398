"""Strategy setup without GPUs: DataParallel's planned devices and scaling, dp+bf16 refused, FSDP2
shards before it places (2 gloo ranks on CPU: the pair of tests/helpers/gloo_pair.py, shared with
other modules' rank-side checks) and gets a bf16 MixedPrecisionPolicy."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hpcgpu.contract.errors import UserError  # noqa: E402
from hpcgpu.worker import strategy  # noqa: E402
from hpcgpu.worker.rank import RankInfo  # noqa: E402
from hpcgpu.worker.strategy import (check_setup, data_replicas, dp_device_ids, fsdp_mp_policy,  # noqa: E402
                                    scaled_lr, wrap)
from hpcgpu.worker.trainer import Trainer  # noqa: E402
from tests.helpers.gloo_pair import gloo_pair_results  # noqa: E402

ONE = RankInfo(rank=0, local_rank=0, world_size=1, local_world_size=1, node_rank=0, source="single")
CUDA0 = torch.device("cuda", 0)


# ------------------------------------------------------------------ DataParallel


def test_dp_drives_the_planned_gpus_not_every_visible_one():
    assert dp_device_ids(CUDA0, planned_gpus=2, visible=8) == [0, 1]
    assert dp_device_ids(CUDA0, planned_gpus=8, visible=8) == list(range(8))


def test_dp_without_a_plan_drives_every_visible_gpu():
    assert dp_device_ids(CUDA0, planned_gpus=None, visible=4) == [0, 1, 2, 3]


def test_dp_on_cpu_drives_no_gpu():
    assert dp_device_ids(torch.device("cpu"), planned_gpus=0, visible=0) == []


def test_dp_planned_for_more_gpus_than_the_node_has_is_an_error():
    with pytest.raises(UserError, match="planned for 4 GPU"):
        dp_device_ids(CUDA0, planned_gpus=4, visible=2)


def test_lr_and_batch_count_the_dp_replicas_that_run():
    assert data_replicas("dp", [0, 1]) == 2
    assert data_replicas("dp", []) == 1  # CPU: the plain model
    assert data_replicas("ddp", [0, 1]) == 1
    # 2 planned GPUs of 8 visible: the lr doubles, it is not multiplied by 8
    replicas = data_replicas("dp", dp_device_ids(CUDA0, planned_gpus=2, visible=8))
    assert scaled_lr(1e-3, "linear", 1 * replicas, 1) == pytest.approx(2e-3)


def test_the_trainer_takes_dp_gpus_from_the_plan(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    trainer = SimpleNamespace(ctx=SimpleNamespace(plan=SimpleNamespace(gpus_per_node=2)), device=CUDA0)
    assert Trainer._dp_device_ids(trainer) == [0, 1]


class _StaysPut(nn.Linear):
    """Ignores .to(): a CPU-only torch cannot place a module on cuda."""

    def to(self, *args, **kwargs):
        return self


def test_dataparallel_gets_the_device_ids_explicitly(monkeypatch):
    seen = {}

    class Recorder(nn.Module):
        def __init__(self, module, device_ids=None, output_device=None):
            super().__init__()
            seen.update(device_ids=device_ids, output_device=output_device)

    monkeypatch.setattr(strategy.nn, "DataParallel", Recorder)
    wrap(_StaysPut(2, 2), "dp", CUDA0, dp_devices=[0, 1])
    assert seen == {"device_ids": [0, 1], "output_device": 0}


def test_dp_with_bf16_is_refused_naming_the_keys_and_the_fix():
    with pytest.raises(UserError) as e:
        check_setup("dp", "bf16", CUDA0, ONE)
    assert "train.strategy dp" in str(e.value) and "train.precision bf16" in str(e.value)
    assert "train.strategy ddp" in e.value.hint
    check_setup("dp", "fp16", CUDA0, ONE)  # fp16 under dp works: the replicas' default dtype is fp16
    check_setup("ddp", "bf16", CUDA0, ONE)


# ------------------------------------------------------------------ FSDP2


def test_bf16_gets_an_fsdp_policy_fp32_and_fp16_none():
    policy = fsdp_mp_policy("bf16")
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert fsdp_mp_policy("fp32") is None and fsdp_mp_policy("fp16") is None


class _Recording(nn.Module):
    """Records every _apply (what .to() runs) and whether its parameters were sharded then."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 64)
        self.applied: list[bool] = []

    def _apply(self, fn, *args, **kwargs):
        from torch.distributed.tensor import DTensor

        self.applied.append(all(isinstance(p, DTensor) for p in self.parameters()))
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x):
        return self.b(self.a(x))


def fsdp_sharding_on_two_ranks(rank: int, world: int) -> dict:
    """On each of the two ranks of tests/helpers/gloo_pair.py."""
    model = _Recording()
    full = sum(p.numel() for p in model.parameters())
    model = wrap(model, "fsdp", torch.device("cpu"), lambda m: [m.a, m.b], precision="bf16")
    local = sum(p.to_local().numel() for p in model.parameters())
    states = [m._get_fsdp_state()._mp_policy for m in (model, model.a, model.b)]
    loss = model(torch.ones(2, 64)).sum()  # the sharded model still runs (bf16 params gathered)
    return {"full": full, "local": local, "applied": model.applied, "finite": bool(torch.isfinite(loss)),
            "policies": [[str(p.param_dtype), str(p.reduce_dtype)] for p in states]}


def test_fsdp_shards_before_placing_and_gets_the_bf16_policy(tmp_path_factory):
    ranks = gloo_pair_results(tmp_path_factory, "tests.worker.test_worker_strategy:fsdp_sharding_on_two_ranks")
    assert len(ranks) == 2
    for got in ranks:
        assert "error" not in got, got["error"]
        # nothing moved the unsharded model (model.to(device) before fully_shard would have)
        assert all(got["applied"]), got["applied"]
        # each of 2 ranks holds about half the parameters (64x64+64 splits evenly: exactly half)
        assert got["local"] == got["full"] // 2, got
        assert got["policies"] == [["torch.bfloat16", "torch.float32"]] * 3
        assert got["finite"]
