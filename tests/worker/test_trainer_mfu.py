"""MFU in the summary line and in TensorBoard (docs/trainer.md: "MFU divides by the dense datasheet
peak of every GPU that ran"; `train/mfu` is a fraction).

The peak is what _build reads off a GPU's name (perf.peak_flops of torch.cuda.get_device_name);
a CPU rank has none, so here the rank is given a peak of 1e11 FLOP/s per device after _build, as
a GPU rank would have; everything else runs as on a CPU. Numbers (tests/helpers/trainer_rig.py):
rank 0 of 2, 32 samples, batch 4: 4 steps of 8 samples (both ranks), 0.25 s each: 32 samples/s;
1e9 FLOPs per sample: 3.2e10 FLOP/s; over 2 devices x 1e11 the MFU is 0.16."""

from __future__ import annotations

import pytest

from hpcgpu.worker import trainer as trainer_mod
from tests.helpers.trainer_rig import RecordingMetrics, const_task, context, rig

PEAK = 1e11


def fit(tmp_path, monkeypatch, name):
    class RankWithAPeak(trainer_mod.Trainer):
        def _build(self) -> None:
            super()._build()
            self.peak = PEAK

    clock = rig(monkeypatch)
    ctx = context(tmp_path, name, rank=0, world_size=2, train={"batch_size": 4})
    trainer = RankWithAPeak(ctx, const_task(samples=32, flops=1e9))
    clock.trainer = trainer
    trainer.outcome = trainer.fit()
    return trainer


def test_the_summary_states_mfu_over_the_peak_of_every_device(tmp_path, monkeypatch, capsys):
    t = fit(tmp_path, monkeypatch, "summary")
    assert t.outcome.step == 4
    out = capsys.readouterr().out
    assert "32 samples/s, 0.03 TFLOP/s (MFU 16.0%)" in out


def test_tensorboard_gets_mfu_as_a_fraction_over_every_device(tmp_path, monkeypatch):
    fit(tmp_path, monkeypatch, "tb")
    step, scalars = RecordingMetrics.made[-1].logged[-1]
    assert step == 4
    assert scalars["train/samples_per_s"] == 32.0
    assert scalars["train/tflops"] == pytest.approx(0.032)
    assert scalars["train/mfu"] == pytest.approx(0.16)
