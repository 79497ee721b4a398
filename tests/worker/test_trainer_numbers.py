"""The numbers the Trainer reports, exactly: final and logged loss, learning rate, samples/s, epochs,
summary.json, the stop check cadence and the checkpoint cadence. In one process on the CPU, with a
model whose loss is b**2 for any batch (tests/helpers/trainer_rig.py) and a clock that advances
0.25 s per optimizer step, so every expected value is a literal."""

from __future__ import annotations

import json
import re

import pytest
import torch

from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker import stop
from hpcgpu.worker import trainer as trainer_mod
from tests.helpers.trainer_rig import RecordingMetrics, RecordingProgress, const_task, context, fit, rig


PROGRESS_LINE = re.compile(r"^step \d+/\d+ epoch ", re.MULTILINE)


def logged(progress: RecordingProgress) -> list[tuple]:
    """(step, loss, lr, samples/s) of the updates that carried numbers."""
    return [(s, loss, lr, rate) for s, _, loss, lr, rate in progress.updates if loss is not None]


def test_the_final_loss_is_the_loss_of_the_last_step_not_its_sum_over_micro_batches(tmp_path, monkeypatch):
    clock = rig(monkeypatch)
    # 32 samples, 4 per micro-batch, 2 micro-batches per step: 4 steps; every batch's loss is 0.5**2
    t = fit(context(tmp_path, "accum", train={"batch_size": 4, "grad_accum": 2}), const_task(b=0.5), clock)
    assert t.outcome.status == "done"
    assert t.outcome.step == 4
    assert t.outcome.final_loss == 0.25
    assert t.outcome.checkpoint == str(tmp_path / "accum" / "checkpoints" / "step_00000004")
    summary = json.loads((tmp_path / "accum" / "summary.json").read_text())
    assert summary["final_loss"] == 0.25 and summary["status"] == "done" and summary["steps"] == 4
    assert summary["world_size"] == 1 and summary["checkpoint"] == t.outcome.checkpoint
    # 4 steps x 8 samples in 4 x 0.25 s of training
    assert summary["samples_per_s"] == 32.0
    assert summary["wall_s"] == 1.0 and summary["train_s"] == 1.0


def test_the_logged_loss_is_the_mean_over_the_steps_since_the_last_log(tmp_path, monkeypatch):
    clock = rig(monkeypatch)
    # 8 steps of 4 samples; lines every 3 steps and at the last one (8)
    t = fit(context(tmp_path, "log", train={"batch_size": 4, "log_every": 3}), const_task(b=0.5), clock)
    (progress,) = RecordingProgress.made
    assert [u[0] for u in progress.updates] == [1, 2, 3, 4, 5, 6, 7, 8]  # every step updates the bar
    assert [u[1] for u in progress.updates] == [0] * 8  # step 8 ends epoch 0 and is shown in it
    # 4 samples per step, 0.25 s per step: 16 samples/s, whatever the number of steps between logs
    assert logged(progress) == [(3, 0.25, 0.1, 16.0), (6, 0.25, 0.1, 16.0), (8, 0.25, 0.1, 16.0)]
    (metrics,) = RecordingMetrics.made
    assert [step for step, _ in metrics.logged] == [3, 6, 8]
    assert metrics.logged[-1][1] == {"train/loss": 0.25, "train/lr": 0.1, "train/samples_per_s": 16.0}
    assert metrics.closed
    assert t.progress.total == 8


def test_a_logged_loss_that_changes_is_averaged_over_the_steps_it_covers(tmp_path, monkeypatch):
    clock = rig(monkeypatch)
    # plain SGD on b with loss b**2: b -> b * (1 - 2 * lr); lr 0.25 halves b every step
    task = const_task(b=1.0, frozen=False)
    fit(context(tmp_path, "avg", train={"batch_size": 8, "lr": 0.25, "log_every": 2}), task, clock)
    (progress,) = RecordingProgress.made
    losses = [loss for _, loss, _, _ in logged(progress)]
    # steps 1..4 have losses 1, 1/4, 1/16, 1/64: logged (1 + 1/4)/2 and (1/16 + 1/64)/2
    assert losses == pytest.approx([0.625, 0.0390625], rel=1e-6)


def test_samples_per_s_counts_the_samples_of_all_ranks_and_micro_batches(tmp_path, monkeypatch):
    clock = rig(monkeypatch)
    # rank 0 of 2 (no process group in this test): 2 samples x 2 ranks x 2 micro-batches per step
    ctx = context(tmp_path, "rate", rank=0, world_size=2,
                  train={"batch_size": 2, "grad_accum": 2, "log_every": 2, "lr_scaling": "linear"})
    t = fit(ctx, const_task(samples=32, flops=1e9), clock)
    assert t.global_batch == 8 and t.total_steps == 4  # 16 samples per rank, 4 per rank and step
    (metrics,) = RecordingMetrics.made
    assert [step for step, _ in metrics.logged] == [2, 4]
    for _, scalars in metrics.logged:
        assert scalars["train/samples_per_s"] == 32.0  # 8 samples per 0.25 s
        assert scalars["train/tflops"] == pytest.approx(32.0 * 1e9 / 1e12)
        assert scalars["train/lr"] == pytest.approx(0.4)  # 0.1 x 2 ranks x 2 micro-batches (linear)
    summary = json.loads((tmp_path / "rate" / "summary.json").read_text())
    assert summary["world_size"] == 2


def test_the_learning_rate_follows_the_tasks_schedule_and_is_constant_without_one(tmp_path, monkeypatch):
    rig(monkeypatch)
    plain = fit(context(tmp_path, "const", train={"batch_size": 8}), const_task())
    assert plain.optimizer.param_groups[0]["lr"] == 0.1
    assert plain.scheduler.get_last_lr() == [0.1]
    halved = fit(context(tmp_path, "sched", train={"batch_size": 8}), const_task(lr_schedule=lambda n: 0.5))
    assert halved.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_the_tasks_optimizer_is_used_and_adamw_with_the_scaled_lr_by_default(tmp_path, monkeypatch):
    rig(monkeypatch)
    own = fit(context(tmp_path, "sgd", train={"batch_size": 8}), const_task())
    assert type(own.optimizer) is torch.optim.SGD
    default = fit(context(tmp_path, "adamw", world_size=2, train={"batch_size": 8, "lr_scaling": "linear"}),
                  const_task(optimizer=None))
    assert type(default.optimizer) is torch.optim.AdamW
    assert default.optimizer.param_groups[0]["lr"] == pytest.approx(0.2)
    assert default.optimizer.param_groups[0]["params"][0] is default.model.b


def test_gradients_are_released_after_every_optimizer_step(tmp_path, monkeypatch):
    rig(monkeypatch)
    t = fit(context(tmp_path, "grads", train={"batch_size": 8}), const_task(frozen=False))
    assert all(p.grad is None for p in t.model.parameters())


def test_gradients_are_synchronised_on_the_last_micro_batch_of_each_step_only(tmp_path, monkeypatch):
    rig(monkeypatch)
    calls = []
    real = trainer_mod.grad_sync

    def spy(model, strategy, sync):
        calls.append((model, strategy, sync))
        return real(model, strategy, sync)

    monkeypatch.setattr(trainer_mod, "grad_sync", spy)
    t = fit(context(tmp_path, "sync", train={"batch_size": 4, "grad_accum": 3, "max_steps": 2}), const_task(samples=48))
    assert [sync for _, _, sync in calls] == [False, False, True, False, False, True]
    assert all(model is t.model and strategy == "ddp" for model, strategy, _ in calls)


def test_a_partial_epoch_is_reported_as_a_fraction_of_the_epoch(tmp_path, monkeypatch, capsys):
    clock = rig(monkeypatch)
    # 4 steps per epoch of 2 micro-batches each; stopping after 3 steps is 6 of 8 micro-batches
    ctx = context(tmp_path, "part", train={"batch_size": 4, "grad_accum": 2, "max_steps": 3})
    t = fit(ctx, const_task(samples=32, flops=1e9), clock)
    out = capsys.readouterr().out
    assert (t.epoch, t.batch_in_epoch) == (0, 6)
    assert ("hpcgpu: done at step 3 (0.75 epochs): final loss 0.2500 (the last step, mean over ranks), "
            "32 samples/s, 0.03 TFLOP/s") in out
    assert f"hpcgpu: checkpoints in {tmp_path / 'part' / 'checkpoints'} (last: " in out
    assert "step_00000003)" in out
    assert "final_loss=0.25\n" in out


def test_progress_lines_are_printed_on_rank_0_only(tmp_path, monkeypatch, capsys):
    rig(monkeypatch)
    fit(context(tmp_path, "r0", train={"batch_size": 8, "log_every": 2}, logging={"progress": "lines"}), const_task())
    out = capsys.readouterr().out
    # one epoch of 4 steps: its last step is shown in it
    assert "step 2/4 epoch 0 loss 0.2500 lr 0.1" in out and "step 4/4 epoch 0 loss 0.2500 lr 0.1" in out
    fit(context(tmp_path, "r1", rank=1, world_size=2, train={"batch_size": 4, "log_every": 2},
                logging={"progress": "lines"}), const_task())
    assert not PROGRESS_LINE.search(capsys.readouterr().out)
    fit(context(tmp_path, "off", train={"batch_size": 8, "log_every": 2}, logging={"progress": "off"}), const_task())
    assert not PROGRESS_LINE.search(capsys.readouterr().out)


def test_tensorboard_runs_on_rank_0_only_in_the_run_dir(tmp_path, monkeypatch):
    rig(monkeypatch)
    fit(context(tmp_path, "tb0", train={"batch_size": 8}, logging={"tensorboard": True}), const_task())
    fit(context(tmp_path, "tb1", rank=1, world_size=2, train={"batch_size": 4}, logging={"tensorboard": True}),
        const_task())
    fit(context(tmp_path, "off", train={"batch_size": 8}), const_task())
    main, other, off = RecordingMetrics.made
    assert main.args == {"run_dir": tmp_path / "tb0", "enabled": True, "device": torch.device("cpu"),
                         "start_step": 0}
    assert not other.args["enabled"] and not off.args["enabled"]


def test_checkpoints_every_n_steps_and_at_the_end_keeping_the_newest(tmp_path, monkeypatch):
    rig(monkeypatch)
    # 8 steps: saves at 3 and 6 (every 3) and at 8 (the last); keep_last 2 keeps 6 and 8
    fit(context(tmp_path, "every", train={"batch_size": 4}, checkpoint={"every_steps": 3, "keep_last": 2}),
        const_task())
    kept = [step for step, _ in ckpt.list_checkpoints(tmp_path / "every" / "checkpoints")]
    assert sorted(kept) == [6, 8]


def test_async_save_reaches_the_checkpointer(tmp_path, monkeypatch):
    rig(monkeypatch)
    t = fit(context(tmp_path, "async", train={"batch_size": 8}, checkpoint={"async_save": True}), const_task())
    assert t.saver.async_save is True and t.saver.keep_last == 3
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path / "async" / "checkpoints")] == [4]


class StopAt:
    """stop.should_stop that records when and where it was asked, and agrees to stop at `step`."""

    def __init__(self, step=None):
        self.step, self.trainer, self.calls = step, None, []

    def __call__(self, device=None):
        self.calls.append((self.trainer.step, device))
        return self.trainer.step == self.step


def fit_with_stop(tmp_path, monkeypatch, name, at, **sections):
    rig(monkeypatch)
    asked = StopAt(at)
    monkeypatch.setattr(stop, "should_stop", asked)
    trainer = trainer_mod.Trainer(context(tmp_path, name, **sections), const_task())
    asked.trainer = trainer
    trainer.outcome = trainer.fit()
    return trainer, asked


def test_the_stop_check_runs_every_stop_check_every_steps_but_not_after_the_last(tmp_path, monkeypatch):
    t, asked = fit_with_stop(tmp_path, monkeypatch, "cadence", None, train={"batch_size": 4},
                             distributed={"stop_check_every": 2})
    assert t.outcome.status == "done" and t.outcome.step == 8
    assert asked.calls == [(2, torch.device("cpu")), (4, torch.device("cpu")), (6, torch.device("cpu"))]


def test_an_agreed_stop_saves_the_step_and_ends_stopped(tmp_path, monkeypatch):
    t, _ = fit_with_stop(tmp_path, monkeypatch, "stop", 4, train={"batch_size": 4},
                         distributed={"stop_check_every": 2})
    assert (t.outcome.status, t.outcome.step) == ("stopped", 4)
    assert t.outcome.checkpoint == str(tmp_path / "stop" / "checkpoints" / "step_00000004")
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "stop" / "checkpoints")] == [4]
    assert json.loads((tmp_path / "stop" / "summary.json").read_text())["status"] == "stopped"


def test_a_stop_on_a_step_just_saved_does_not_save_it_again(tmp_path, monkeypatch):
    saves = []
    real = trainer_mod.Trainer._save

    def counting(self):
        saves.append(self.step)
        real(self)

    monkeypatch.setattr(trainer_mod.Trainer, "_save", counting)
    t, _ = fit_with_stop(tmp_path, monkeypatch, "twice", 4, train={"batch_size": 4},
                         checkpoint={"every_steps": 2}, distributed={"stop_check_every": 2})
    assert (t.outcome.status, saves) == ("stopped", [2, 4])


def test_the_loader_pins_memory_only_for_a_gpu(tmp_path, monkeypatch):
    rig(monkeypatch)
    seen = []
    real = trainer_mod.make_loader

    def spy(*args, **kwargs):
        seen.append(kwargs.get("pin_memory"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "make_loader", spy)
    fit(context(tmp_path, "pin", train={"batch_size": 8}), const_task())
    assert seen == [False]


def test_checkpoint_lines_start_a_line_of_their_own_under_the_progress_bar(tmp_path, monkeypatch, capsys):
    rig(monkeypatch)
    fit(context(tmp_path, "bar", train={"batch_size": 8}, checkpoint={"every_steps": 2},
                logging={"progress": "bar"}, console_tty=True), const_task())
    out = capsys.readouterr().out
    assert "\r[" in out  # the bar was drawn
    segments = re.split(r"[\r\n]", out)
    saved = [s for s in segments if "hpcgpu: checkpoint step" in s]
    assert len(saved) == 2 and all(s.startswith("hpcgpu: checkpoint step") for s in saved)


def test_only_rank_0_writes_checkpoints(tmp_path, monkeypatch):
    rig(monkeypatch)
    t = fit(context(tmp_path, "rank1", rank=1, world_size=2, train={"batch_size": 4}), const_task())
    assert t.outcome.step == 4 and t.saver.async_save is False
    assert not (tmp_path / "rank1" / "checkpoints").exists() or not list((tmp_path / "rank1" / "checkpoints").iterdir())
