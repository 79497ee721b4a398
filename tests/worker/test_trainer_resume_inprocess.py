"""Exact resume of the built-in Trainer, in one process on the CPU: a stopped run resumed ends
bit-identical to an uninterrupted one; the checkpoint holds what docs/checkpointing.md lists; a
different world size keeps the position in samples; each rank gets its own RNG state back.
(The same with real ranks and torchrun: tests/worker/test_resume.py, slow.)"""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.utils.data import TensorDataset

from hpcgpu.contract.checkpoints import read_manifest
from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker import stop
from hpcgpu.worker import trainer as trainer_mod
from hpcgpu.worker.context import resolve_resume
from hpcgpu.worker.state import rng_state, seed_everything
from hpcgpu.worker.task import Task
from tests.helpers.trainer_rig import RecordingMetrics, RecordingProgress, const_task, context, rig

TRAIN = {"batch_size": 2, "grad_accum": 2, "epochs": 2, "seed": 7}  # 32 samples: 8 steps per epoch, 16 in all


def noisy_task() -> Task:
    """Dropout (the torch RNG), AdamW (optimizer state) and a decaying schedule (scheduler state)."""
    gen = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(32, 4, generator=gen), torch.randn(32, 1, generator=gen))
    return Task(model=lambda: torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(4, 1)), dataset=data,
                loss=torch.nn.functional.mse_loss, lr_schedule=lambda n: 1.0 / (1 + n))


class StopAt:
    def __init__(self, step):
        self.step, self.trainer = step, None

    def __call__(self, device=None):
        return self.trainer is not None and self.trainer.step == self.step


def run(tmp_path, monkeypatch, name, task, stop_at=None, resume=False, **ctx_args):
    clock = rig(monkeypatch)
    asked = StopAt(stop_at)
    monkeypatch.setattr(stop, "should_stop", asked)
    ctx_args.setdefault("train", TRAIN)
    ctx_args.setdefault("distributed", {"stop_check_every": 1})
    ctx = context(tmp_path, name, **ctx_args)
    if resume:
        resolve_resume(ctx, {})
    trainer = trainer_mod.Trainer(ctx, task)
    clock.trainer = asked.trainer = trainer
    trainer.outcome = trainer.fit()
    return trainer


def params(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_a_stopped_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    whole = run(tmp_path, monkeypatch, "whole", noisy_task())
    first = run(tmp_path, monkeypatch, "parts", noisy_task(), stop_at=5)
    assert (first.outcome.status, first.outcome.step) == ("stopped", 5)
    capsys.readouterr()
    second = run(tmp_path, monkeypatch, "parts", noisy_task(), resume=True, logging={"progress": "bar"},
                 console_tty=True)
    out = capsys.readouterr().out
    step5 = tmp_path / "parts" / "checkpoints" / "step_00000005"
    # 5 steps of 2 micro-batches: 10 of the epoch's 16 micro-batches consumed
    assert f"hpcgpu: resuming from {step5}: step 5, epoch 0, batch 10 of 16 in the epoch" in out
    assert "warning" not in out
    assert (second.outcome.status, second.outcome.step) == ("done", 16)
    assert second.outcome.final_loss == whole.outcome.final_loss
    for a, b in zip(params(second), params(whole)):
        assert torch.equal(a, b)
    assert second.optimizer.param_groups[0]["lr"] == whole.optimizer.param_groups[0]["lr"]
    # the resumed attempt: TensorBoard continues at step 5, throughput counts the 11 steps it trained
    assert RecordingMetrics.made[-1].args["start_step"] == 5
    assert RecordingProgress.made[-1].start_step == 5 and "eta 0:00:00" in out
    summary = json.loads((tmp_path / "parts" / "summary.json").read_text())
    assert summary["train_s"] == 2.75 and summary["wall_s"] == 4.0  # 11 steps trained, clock from step 0 to 16
    assert summary["samples_per_s"] == 16.0  # 11 steps x 4 samples in 2.75 s


def test_the_checkpoint_holds_what_the_documentation_lists(tmp_path, monkeypatch):
    t = run(tmp_path, monkeypatch, "state", const_task(samples=32), stop_at=3)
    path = tmp_path / "state" / "checkpoints" / "step_00000003"
    state = ckpt.load_state(path)
    assert state["format"] == 1
    assert state["progress"] == {"step": 3, "epoch": 0, "batch_in_epoch": 6, "world_size": 1, "batch_size": 2,
                                 "grad_accum": 2}
    assert state["sampler"] == {"seed": 7, "epoch": 0, "skip": 12}  # 6 micro-batches of 2 samples
    assert set(state["model"]) == {"b"} and state["model"]["b"].tolist() == [0.5]
    assert set(state["optimizer"]) == {"state", "param_groups"}
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert state["scheduler"]["last_epoch"] == 3  # three scheduler steps
    assert state["scaler"] is None  # fp32: no gradient scaler
    (rng,) = state["rng"]
    assert set(rng) >= {"python", "numpy", "torch"}
    assert state["spec"]["train"]["lr"] == 0.1 and state["spec"]["train"]["grad_accum"] == 2
    assert json.loads(state["spec"]["json"])["train"]["seed"] == 7
    assert len(state["spec"]["hash"]) == 16
    manifest = read_manifest(path)
    assert {k: manifest[k] for k in ("kind", "epoch", "world_size", "strategy", "spec_hash")} == {
        "kind": "state", "epoch": 0, "world_size": 1, "strategy": "ddp", "spec_hash": state["spec"]["hash"]}
    assert t.saver.last == path and t.saver.last_step == 3


def test_resuming_on_more_ranks_keeps_the_position_in_samples(tmp_path, monkeypatch, capsys):
    # 48 samples on 2 ranks: 24 per rank, 6 steps of 2 x 2 per epoch; stopped after 5 steps,
    # each rank had consumed 10 micro-batches: 40 samples of the epoch in all
    run(tmp_path, monkeypatch, "grow", const_task(samples=48), stop_at=5, rank=0, world_size=2)
    capsys.readouterr()
    # on 3 ranks: 16 samples per rank, 4 steps of 2 x 2 per epoch; 40 samples are 6 micro-batches
    # per rank (40 / 3 / 2 = 6.67, rounded down to whole steps of 2)
    t = run(tmp_path, monkeypatch, "grow", const_task(samples=48), resume=True, rank=0, world_size=3)
    out = capsys.readouterr().out
    assert ": step 5, epoch 0, batch 6 of 8 in the epoch" in out
    assert "hpcgpu: warning: checkpoint saved with 2 ranks, resuming on 3" in out
    # the run ends where train.epochs (2) ends, counted in 3-rank steps: step 6 ends epoch 0,
    # steps 7-10 are epoch 1 (it used to stop at step 8, the 2-rank total, mid-epoch)
    assert (t.outcome.step, t.epoch, t.batch_in_epoch) == (10, 2, 0)


def test_resuming_on_more_ranks_at_the_end_of_their_shorter_epoch_starts_the_next_epoch(tmp_path, monkeypatch,
                                                                                        capsys):
    # 32 samples on 2 ranks, stopped after 3 of 4 steps per epoch: 24 samples consumed, 12 per rank.
    # On 3 ranks an epoch is 2 steps of 2 x 2 per rank (11 samples each, padded): 8 samples per rank
    # consumed, not enough left for a whole step: the resumed run starts epoch 1 (it used to stop
    # with StopIteration in the loop).
    run(tmp_path, monkeypatch, "edge", const_task(samples=32), stop_at=3, rank=0, world_size=2,
        train={"batch_size": 2, "grad_accum": 2, "epochs": 3})
    t = run(tmp_path, monkeypatch, "edge", const_task(samples=32), resume=True, rank=0, world_size=3,
            train={"batch_size": 2, "grad_accum": 2, "epochs": 3})
    assert ": step 3, epoch 1, batch 0 of 4 in the epoch" in capsys.readouterr().out
    # epochs 1 and 2 are left, 2 steps each on 3 ranks: steps 4-7, ending where epoch 2 ends
    assert (t.outcome.status, t.outcome.step, t.epoch, t.batch_in_epoch) == ("done", 7, 3, 0)


def test_a_changed_spec_is_named_when_resuming(tmp_path, monkeypatch, capsys):
    run(tmp_path, monkeypatch, "changed", const_task(), stop_at=2)
    capsys.readouterr()
    run(tmp_path, monkeypatch, "changed", const_task(), resume=True, train={**TRAIN, "lr": 0.2})
    out = capsys.readouterr().out
    assert "hpcgpu: warning: resuming with a changed spec" in out and "train.lr: 0.1 -> 0.2" in out


def test_a_finished_run_resumed_trains_nothing_and_reports_no_final_loss(tmp_path, monkeypatch, capsys):
    run(tmp_path, monkeypatch, "finished", const_task(), train={"batch_size": 8})
    t = run(tmp_path, monkeypatch, "finished", const_task(), resume=True, train={"batch_size": 8})
    assert (t.outcome.status, t.outcome.step, t.outcome.final_loss) == ("done", 4, None)
    assert "final loss None" in capsys.readouterr().out


def test_a_fresh_run_says_it_starts_at_step_0(tmp_path, monkeypatch, capsys):
    run(tmp_path, monkeypatch, "fresh", const_task(), train={"batch_size": 8}, resume=True)
    assert re.search(r"^hpcgpu: no checkpoint to resume from: starting at step 0$", capsys.readouterr().out, re.M)


def test_a_checkpoint_of_another_strategy_is_refused_naming_train_strategy(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch, "ddp", const_task(), stop_at=2)
    ctx = context(tmp_path, "ddp", train={**TRAIN, "strategy": "fsdp"})
    resolve_resume(ctx, {})
    with pytest.raises(ckpt.CheckpointError, match="step_00000002 was saved with another strategy than "
                                                   "train.strategy fsdp"):
        trainer_mod.Trainer(ctx, const_task())._resume()


def rng_states():
    seed_everything(1)
    a = rng_state()
    seed_everything(2)
    b = rng_state()
    return a, b


@pytest.mark.parametrize(("rank", "world_size", "which"), [(1, 2, 1), (0, 2, 0), (1, 3, 0)],
                         ids=["own-rank", "rank-0", "other-world-size-takes-rank-0s"])
def test_each_rank_gets_its_own_rng_state_back(tmp_path, monkeypatch, rank, world_size, which):
    run(tmp_path, monkeypatch, "rng", const_task(), stop_at=2)
    saved = tmp_path / "rng" / "checkpoints" / "step_00000002"
    state = ckpt.load_state(saved)
    states = rng_states()
    state["rng"] = list(states)  # as two ranks would have saved it
    ctx = context(tmp_path, "rng", rank=rank, world_size=world_size, train={**TRAIN, "batch_size": 1})
    ctx.resume_from = ckpt.save_state(ctx.ckpt_dir, 3, state, {})
    trainer = trainer_mod.Trainer(ctx, const_task())
    trainer._build()
    trainer._resume()
    assert torch.equal(torch.get_rng_state(), states[which]["torch"])
    assert trainer.step == 2


def test_a_checkpoint_with_a_gradient_scaler_resumes_under_fp32_without_one(tmp_path, monkeypatch):
    # saved by an fp16 run (it has a scaler); this CPU run is fp32 and has none: the scaler state is unused
    run(tmp_path, monkeypatch, "fp16", const_task(), stop_at=2)
    state = ckpt.load_state(tmp_path / "fp16" / "checkpoints" / "step_00000002")
    state["scaler"] = {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0}
    ckpt.save_state(tmp_path / "fp16" / "checkpoints", 3, state, {})
    t = run(tmp_path, monkeypatch, "fp16", const_task(), resume=True)
    assert t.scaler is None and t.start_step == 2 and t.outcome.status == "done"
