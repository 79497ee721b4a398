"""What `status SWEEP` reads from a task's files (hpcgpu/cli/sweep_view.py): the last progress line
of rank 0's log, and summary.json's numbers."""

from __future__ import annotations

from hpcgpu.cli.sweep_view import last_progress, summary_metrics


def test_the_last_progress_line_of_a_log_or_bar():
    text = ("step 2/32 epoch 0 loss 2.3000 lr 0.001 100 samples/s\n"
            "hpcgpu: checkpoint step 2 -> ...\n"
            "step 4/32 epoch 0 loss 2.1000 lr 0.001\n")
    assert last_progress(text) == (4, 2.1)
    assert last_progress("\r[####....] 10/40 ep 0 loss 1.5000 lr 0.01 eta 3s  \r[#####...] 12/40 ep 0 loss 1.4000") == (12, 1.4)
    assert last_progress("step 3/9 epoch 0 loss nan lr 0.1\n")[0] == 3
    assert last_progress("hpcgpu: starting\n") == (None, None)


def test_summary_metrics_flatten_sections_and_skip_text_and_flags():
    summary = {"status": "done", "final_loss": 0.5, "steps": 32, "checkpoint": "/x", "eval": {"loss": 0.7, "acc": 0.9},
               "metrics": {"eval/loss": 0.7}, "flag": True}
    assert summary_metrics(summary) == {"final_loss": 0.5, "steps": 32.0, "eval/loss": 0.7, "eval/acc": 0.9}
