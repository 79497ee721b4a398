"""Where the Trainer's collectives and sums run. NCCL all-reduces CUDA tensors only, so the loss mean
and the stop agreement of a GPU rank run on its GPU and those of a CPU rank on the CPU; the barrier
at the end waits on the rank's GPU (device_ids); the RNG gather follows torch's contract for
gather_object (a list on the destination rank 0, None elsewhere). No GPU is needed: a
torch.device("cuda", n) object is only compared, never used."""

from __future__ import annotations

import torch
import torch.distributed as tdist

from hpcgpu.worker import trainer as trainer_mod
from tests.helpers.trainer_rig import const_task, context, fit, rig


def trainer_on(tmp_path, device, **kwargs) -> trainer_mod.Trainer:
    ctx = context(tmp_path, "dev", **kwargs)
    ctx.device = device
    return trainer_mod.Trainer(ctx, const_task())


def test_a_gpu_ranks_collectives_run_on_its_gpu(tmp_path):
    assert trainer_on(tmp_path, torch.device("cuda", 1))._collective_device() == torch.device("cuda", 1)


def test_a_cpu_ranks_collectives_run_on_the_cpu(tmp_path):
    assert trainer_on(tmp_path, torch.device("cpu"))._collective_device() == torch.device("cpu")


def test_the_final_barrier_waits_on_the_ranks_device(tmp_path, monkeypatch):
    rig(monkeypatch)
    seen = []
    monkeypatch.setattr(trainer_mod, "barrier", lambda device=None: seen.append(device))
    t = fit(context(tmp_path, "barrier", train={"batch_size": 8}), const_task())
    assert seen == [t.device] and t.device == torch.device("cpu")


def test_the_step_loss_is_summed_on_the_ranks_device_whatever_torchs_default_device(tmp_path, monkeypatch):
    # a task may set torch's default device (torch.set_default_device); the loss sum of a step must stay
    # on the rank's device, where the all-reduce of the loss mean needs it ("meta" here: any other device)
    rig(monkeypatch)
    t = fit(context(tmp_path, "sum", train={"batch_size": 4, "grad_accum": 2}), const_task(samples=8))
    batches = iter([(torch.zeros(4, 1), torch.zeros(4, 1)), (torch.zeros(4, 1), torch.zeros(4, 1))])
    with torch.device("meta"):
        loss = t._train_step(batches)
    assert loss.device == torch.device("cpu")
    assert loss.item() == 0.25  # two micro-batches of 0.5**2 / 2


class GatherObject:
    """torch.distributed.gather_object of a world of 2 in which rank 1's object is OTHER; it refuses
    an output list on a rank that is not the destination, as torch's does."""

    OTHER = {"torch": "rank 1's state"}

    def __init__(self, rank):
        self.rank, self.calls = rank, []

    def __call__(self, obj, object_gather_list=None, dst=0, group=None):
        self.calls.append(object_gather_list)
        if self.rank != dst:
            if object_gather_list is not None:
                raise ValueError("Argument ``gather_list`` must NOT be specified on non-destination ranks.")
            return
        object_gather_list[:] = [obj, self.OTHER]


def state_of_rank(tmp_path, monkeypatch, rank):
    rig(monkeypatch)
    t = fit(context(tmp_path, f"r{rank}", rank=rank, world_size=2, train={"batch_size": 8}), const_task())
    gather = GatherObject(rank)
    monkeypatch.setattr(trainer_mod, "is_distributed", lambda: True)
    monkeypatch.setattr(tdist, "gather_object", gather)
    return t._state(), gather.calls


def test_rank_0_gathers_the_rng_states_of_every_rank(tmp_path, monkeypatch):
    state, calls = state_of_rank(tmp_path, monkeypatch, 0)
    assert len(calls) == 1
    assert len(state["rng"]) == 2 and state["rng"][1] == GatherObject.OTHER
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}


def test_other_ranks_send_their_rng_state_without_an_output_list(tmp_path, monkeypatch):
    state, calls = state_of_rank(tmp_path, monkeypatch, 1)
    assert calls == [None]
    assert state["rng"] == []  # only rank 0 writes the checkpoint
