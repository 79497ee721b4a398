"""Rank-0 progress: a bar only on a terminal, plain lines in log files, strategies' pure helpers."""

import io

import pytest
import torch

from hpcgpu.contract.errors import UserError
from hpcgpu.worker.progress import Progress, choose_mode
from hpcgpu.worker.rank import RankInfo
from hpcgpu.worker.strategy import check_setup, scaled_lr


@pytest.mark.parametrize("setting,tty,mode", [
    ("auto", True, "bar"), ("auto", False, "lines"), ("bar", True, "bar"), ("bar", False, "lines"),
    ("lines", True, "lines"), ("off", True, "off"),
])
def test_choose_mode(setting, tty, mode):
    assert choose_mode(setting, tty) == mode


def test_lines_mode_prints_only_logging_steps():
    out = io.StringIO()
    p = Progress("lines", total_steps=20, log_every=10, stream=out)
    p.update(1, 0)
    p.update(10, 0, loss=1.5, lr=0.002, samples_per_s=1234.0)
    p.message("hpcgpu: checkpoint")
    assert out.getvalue() == "step 10/20 epoch 0 loss 1.5000 lr 0.002 1,234 samples/s\nhpcgpu: checkpoint\n"


def test_bar_mode_redraws_in_place_and_messages_start_a_new_line():
    out = io.StringIO()
    p = Progress("bar", total_steps=4, log_every=2, stream=out)
    p.update(2, 0, loss=2.0, lr=0.1, samples_per_s=10.0)
    p.message("saved")
    p.update(4, 1)
    p.close()
    text = out.getvalue()
    assert text.startswith("\r[############............] 2/4") and "\nsaved\n\r[" in text and text.endswith("\n")


@pytest.mark.parametrize("mode,expected", [("linear", 0.016), ("sqrt", 0.004), ("none", 0.001)])
def test_scaled_lr(mode, expected):
    assert scaled_lr(0.001, mode, world_size=4, grad_accum=4) == pytest.approx(expected)


def test_fp16_on_cpu_names_the_key_and_bf16_is_allowed():
    with pytest.raises(UserError, match="train.precision fp16 needs CUDA") as info:
        check_setup("ddp", "fp16", torch.device("cpu"), RankInfo(0, 0, 2, 2, 0, "torchrun"))
    assert "bf16" in info.value.hint
    check_setup("ddp", "bf16", torch.device("cpu"), RankInfo(0, 0, 2, 2, 0, "torchrun"))  # torch.autocast("cpu")


def test_dp_with_several_ranks_is_refused():
    with pytest.raises(UserError, match="strategy dp"):
        check_setup("dp", "fp32", torch.device("cpu"), RankInfo(0, 0, 2, 2, 0, "torchrun"))
