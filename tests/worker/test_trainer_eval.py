"""The Trainer evaluates every train.eval_every_steps and after the last step, logs eval/<metric>, puts
the last evaluation in the summary, and evaluation never changes training: a run with evaluation,
stopped and resumed, ends bit-identical to an uninterrupted run without evaluation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.utils.data import TensorDataset

from hpcgpu.worker import stop
from hpcgpu.worker import trainer as trainer_mod
from hpcgpu.worker.context import resolve_resume
from hpcgpu.worker.task import Task
from tests.helpers.trainer_rig import RecordingMetrics, const_task, context, rig

TRAIN = {"batch_size": 2, "grad_accum": 2, "epochs": 2, "seed": 7}  # 32 samples: 8 steps per epoch, 16 in all


def noisy_task(with_eval: bool = True) -> Task:
    """Dropout (the torch RNG), AdamW and a decaying schedule; an uneven evaluation set of 11 samples."""
    gen = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(32, 4, generator=gen), torch.randn(32, 1, generator=gen))
    held_out = TensorDataset(torch.randn(11, 4, generator=gen), torch.randn(11, 1, generator=gen))
    return Task(model=lambda: torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(4, 1)), dataset=data,
                loss=torch.nn.functional.mse_loss, lr_schedule=lambda n: 1.0 / (1 + n),
                eval_dataset=held_out if with_eval else None)


def run(tmp_path, monkeypatch, name, task, stop_at=None, resume=False, train=None, checkpoint=None):
    rig(monkeypatch)
    trainer = None
    monkeypatch.setattr(stop, "should_stop", lambda device=None: trainer is not None and trainer.step == stop_at)
    ctx = context(tmp_path, name, train={**TRAIN, **(train or {})}, distributed={"stop_check_every": 1},
                  checkpoint=checkpoint)
    if resume:
        resolve_resume(ctx, {})
    trainer = trainer_mod.Trainer(ctx, task)
    trainer.outcome = trainer.fit()
    return trainer


def eval_steps(metrics: RecordingMetrics) -> list[int]:
    return [step for step, scalars in metrics.logged if "eval/loss" in scalars]


def test_evaluation_on_a_stopped_and_resumed_run_keeps_exact_resume(tmp_path, monkeypatch):
    plain = run(tmp_path, monkeypatch, "plain", noisy_task(with_eval=False))
    first = run(tmp_path, monkeypatch, "parts", noisy_task(), stop_at=5, train={"eval_every_steps": 3})
    assert (first.outcome.status, first.outcome.step) == ("stopped", 5)
    assert eval_steps(RecordingMetrics.made[-1]) == [3]
    second = run(tmp_path, monkeypatch, "parts", noisy_task(), resume=True, train={"eval_every_steps": 3})
    assert eval_steps(RecordingMetrics.made[-1]) == [6, 9, 12, 15, 16]  # and after the last step
    assert second.outcome.final_loss == plain.outcome.final_loss
    for a, b in zip(second.model.parameters(), plain.model.parameters()):
        assert torch.equal(a, b)


def test_the_last_evaluation_is_logged_summarised_and_printed(tmp_path, monkeypatch, capsys):
    # b = 0.5 predicted for zero targets: every sample's MSE is 0.25, however the 11 fall into batches
    task = dataclasses.replace(const_task(samples=32), eval_dataset=TensorDataset(torch.zeros(11, 1),
                                                                                  torch.zeros(11, 1)))
    trainer = run(tmp_path, monkeypatch, "s", task, train={"eval_batch_size": 4})
    assert eval_steps(RecordingMetrics.made[-1]) == [16]  # eval_every_steps 0: after the last step only
    logged = dict(RecordingMetrics.made[-1].logged)[16]
    assert logged["eval/loss"] == 0.25 and "eval/samples" not in logged
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["eval"] == {"loss": 0.25, "samples": 11, "step": 16}
    assert trainer.last_eval == summary["eval"]
    out = capsys.readouterr().out
    assert out.count("hpcgpu: eval at step 16: loss 0.2500 (11 samples)") == 2  # when it ran, and in the summary


def test_a_task_without_an_evaluation_set_never_evaluates(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch, "n", const_task(samples=32), train={"eval_every_steps": 1})
    assert eval_steps(RecordingMetrics.made[-1]) == []
    assert "eval" not in json.loads((tmp_path / "n" / "summary.json").read_text())


@pytest.mark.parametrize("direction", ["min", "max"])
def test_keep_best_checkpoints_each_improvement_and_keeps_the_best_beside_the_newest(tmp_path, monkeypatch,
                                                                                       direction):
    from hpcgpu.worker import checkpoint as ckpt

    # the eval loss falls at every evaluation here: loss:min keeps improving (the best is the newest),
    # loss:max's best is the first evaluation's step, which keep_last 2 would have pruned long ago
    plain = run(tmp_path, monkeypatch, "plain", noisy_task(with_eval=False))
    trainer = run(tmp_path, monkeypatch, "best", noisy_task(), train={"eval_every_steps": 2},
                  checkpoint={"keep_best": f"loss:{direction}", "keep_last": 2, "every_steps": 3})
    evals = [(step, scalars["eval/loss"]) for step, scalars in RecordingMetrics.made[-1].logged if "eval/loss" in scalars]
    assert [s for s, _ in evals] == [2, 4, 6, 8, 10, 12, 14, 16]
    sign = 1 if direction == "min" else -1
    best_step, best_loss = min(evals, key=lambda e: sign * e[1])
    improving, top = [], None
    for step, loss in evals:
        if top is None or sign * loss < sign * top:
            improving.append(step)
            top = loss
    ckpt_dir = tmp_path / "best" / "checkpoints"
    best = json.loads((ckpt_dir / "best.json").read_text())
    assert (ckpt_dir / "best.json").stat().st_mode & 0o777 == 0o600
    assert (best["metric"], best["step"]) == ("loss", best_step) and best["value"] == pytest.approx(best_loss)
    assert best["path"] == str(ckpt_dir / ckpt.step_dir_name(best_step))
    # the two newest saves (every 3 steps, each improvement, the end) and the best, whatever its age
    saved = sorted({*improving, *range(3, 17, 3), 16})
    assert sorted(step for step, _ in ckpt.list_checkpoints(ckpt_dir)) == sorted({*saved[-2:], best_step})
    assert ckpt.load_state(ckpt_dir / ckpt.step_dir_name(best_step))["best"]["step"] == best_step  # verified on load
    # saving at evaluations changes nothing in the training
    assert trainer.outcome.final_loss == plain.outcome.final_loss


def test_keep_best_survives_a_stop_and_resume(tmp_path, monkeypatch):
    rule = {"checkpoint": {"keep_best": "loss:min", "keep_last": 2, "every_steps": 1000}}
    whole = run(tmp_path, monkeypatch, "whole", noisy_task(), train={"eval_every_steps": 2}, **rule)
    run(tmp_path, monkeypatch, "parts", noisy_task(), stop_at=7, train={"eval_every_steps": 2}, **rule)
    resumed = run(tmp_path, monkeypatch, "parts", noisy_task(), resume=True, train={"eval_every_steps": 2}, **rule)
    assert resumed.best == whole.best
    a = json.loads((tmp_path / "whole" / "checkpoints" / "best.json").read_text())
    b = json.loads((tmp_path / "parts" / "checkpoints" / "best.json").read_text())
    assert (a["step"], a["value"]) == (b["step"], b["value"])


def test_keep_best_naming_a_metric_the_evaluation_lacks_fails_naming_both(tmp_path, monkeypatch):
    from hpcgpu.contract.errors import UserError

    with pytest.raises(UserError, match="keep_best names the metric 'accuracy', but the evaluation reports loss"):
        run(tmp_path, monkeypatch, "x", noisy_task(), checkpoint={"keep_best": "accuracy:max"})


def test_improves():
    from hpcgpu.worker.evaluation import improves, keep_best_rule

    assert keep_best_rule("eval.top-1/acc:max") == ("eval.top-1/acc", "max") and keep_best_rule(None) is None
    assert improves(0.5, None, "max") and improves(0.6, 0.5, "max") and not improves(0.5, 0.5, "max")
    assert improves(0.4, 0.5, "min") and not improves(0.6, 0.5, "min") and not improves(float("nan"), None, "min")


def test_time_spent_evaluating_is_not_counted_as_training_time(tmp_path, monkeypatch):
    from tests.helpers.trainer_rig import Clock

    class SlowEvalClock(Clock):
        """The rig's clock, plus 10 s for each evaluation batch."""

        extra = 0.0

        def perf_counter(self):
            return super().perf_counter() + self.extra

    def numbers(name, with_eval):
        clock = SlowEvalClock()
        rig(monkeypatch)
        monkeypatch.setattr(trainer_mod, "time", clock)

        def metrics(output, target):
            clock.extra += 10.0
            return {"loss": torch.zeros(len(target))}

        task = dataclasses.replace(noisy_task(with_eval), eval_metrics=metrics)
        ctx = context(tmp_path, name, train={**TRAIN, "log_every": 4, "eval_every_steps": 4})
        trainer = trainer_mod.Trainer(ctx, task)
        clock.trainer = trainer
        trainer.fit()
        rates = [s["train/samples_per_s"] for _, s in RecordingMetrics.made[-1].logged if "train/samples_per_s" in s]
        return rates, json.loads((tmp_path / name / "summary.json").read_text())["samples_per_s"], clock.extra

    plain_rates, plain_rate, _ = numbers("plain", False)
    rates, rate, spent = numbers("eval", True)
    assert spent == 4 * 60.0  # 4 evaluations of 6 batches (11 samples in batches of 2)
    assert rates == plain_rates and rate == plain_rate


def test_the_bundled_gpt_evaluates_its_held_out_text(tmp_path, monkeypatch):
    import math

    from hpcgpu.examples import gpt

    task = gpt.make_task(block_size=16, n_layer=1, n_head=2, n_embd=16, stride=64)
    trainer = run(tmp_path, monkeypatch, "gpt", task, train={"batch_size": 8, "max_steps": 2, "epochs": 1,
                                                             "eval_batch_size": 64})
    vocab = task.model().cfg.vocab_size
    assert trainer.last_eval["samples"] == len(task.eval_dataset) > 100
    # two steps from a small init: about the cross-entropy of a uniform guess over the characters
    assert abs(trainer.last_eval["loss"] - math.log(vocab)) < 0.5
