"""How many steps a resumed run trains: train.max_steps still caps it, and a resume on another world
size recounts the steps left in whole steps of the new world size (docs/checkpointing.md), which the
start line states ("N steps (M per epoch)")."""

from __future__ import annotations

import re

from hpcgpu.worker import stop
from hpcgpu.worker import trainer as trainer_mod
from hpcgpu.worker.context import resolve_resume
from tests.helpers.trainer_rig import const_task, context, rig

TRAIN = {"batch_size": 2, "grad_accum": 2, "epochs": 2, "seed": 7}


def run(tmp_path, monkeypatch, name, samples, stop_at=None, resume=False, **ctx_args):
    rig(monkeypatch)
    trainer = None
    monkeypatch.setattr(stop, "should_stop", lambda device=None: trainer is not None and trainer.step == stop_at)
    ctx_args.setdefault("train", TRAIN)
    ctx = context(tmp_path, name, distributed={"stop_check_every": 1}, **ctx_args)
    if resume:
        resolve_resume(ctx, {})
    trainer = trainer_mod.Trainer(ctx, const_task(samples=samples))
    trainer.outcome = trainer.fit()
    return trainer


def steps_line(out: str) -> str:
    (line,) = re.findall(r"; (\S+ steps \(\S+ per epoch\))$", out, re.M)
    return line


def test_a_resumed_run_still_stops_at_train_max_steps(tmp_path, monkeypatch, capsys):
    # 32 samples, 2 x 2 per step: 8 steps per epoch, 16 for 2 epochs, capped at 12 by max_steps
    train = {**TRAIN, "max_steps": 12}
    run(tmp_path, monkeypatch, "capped", 32, stop_at=4, train=train)
    capsys.readouterr()
    t = run(tmp_path, monkeypatch, "capped", 32, resume=True, train=train)
    assert steps_line(capsys.readouterr().out) == "12 steps (8 per epoch)"
    assert (t.start_step, t.outcome.status, t.outcome.step) == (4, "done", 12)


def test_a_resumed_run_with_max_steps_beyond_its_epochs_ends_where_the_epochs_end(tmp_path, monkeypatch):
    train = {**TRAIN, "max_steps": 100}
    run(tmp_path, monkeypatch, "loose", 32, stop_at=4, train=train)
    t = run(tmp_path, monkeypatch, "loose", 32, resume=True, train=train)
    assert (t.outcome.status, t.outcome.step, t.epoch) == ("done", 16, 2)


def test_a_resume_on_more_ranks_announces_a_whole_number_of_steps(tmp_path, monkeypatch, capsys):
    # 48 samples on 2 ranks, stopped after 5 steps; on 3 ranks 4 steps per epoch, the position is
    # 6 micro-batches (3 steps) into epoch 0: 1 step left in it and 4 in epoch 1, so step 10 ends the run
    run(tmp_path, monkeypatch, "grow", 48, stop_at=5, rank=0, world_size=2)
    capsys.readouterr()
    t = run(tmp_path, monkeypatch, "grow", 48, resume=True, rank=0, world_size=3)
    assert steps_line(capsys.readouterr().out) == "10 steps (4 per epoch)"
    assert t.outcome.step == 10
