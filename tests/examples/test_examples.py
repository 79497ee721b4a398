"""The bundled demo tasks build, and the GPT's FLOP estimate matches nanoGPT's formula."""

import pytest
import torch

from hpcgpu.contract.errors import UserError
from hpcgpu.examples import gpt, mlp
from hpcgpu.worker.task import Task, load_task


def test_mlp_task_is_deterministic_and_small():
    a, b = mlp.make_task(n_samples=64), mlp.make_task(n_samples=64)
    assert isinstance(a, Task) and len(a.dataset) == 64
    assert torch.equal(a.dataset.tensors[1], b.dataset.tensors[1])
    x, y = a.dataset[0]
    assert a.model()(x.unsqueeze(0)).shape == (1, 10)


def test_gpt_task_windows_and_forward():
    task = gpt.make_task(block_size=32, n_layer=1, n_head=2, n_embd=32)
    x, y = task.dataset[3]
    assert x.shape == y.shape == (32,) and torch.equal(x[1:], y[:-1])
    model = task.model()
    logits = model(x.unsqueeze(0))
    assert logits.shape[:2] == (1, 32)
    assert task.loss(logits, y.unsqueeze(0)).item() > 0
    assert len(task.shard_units(model)) == 1


def test_gpt_corpus_is_shipped_and_tens_of_kb():
    assert 20_000 < len(gpt.DATA.read_text(encoding="utf-8")) < 200_000


def test_flops_per_token_is_6n_plus_attention():
    cfg = gpt.GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64)
    assert gpt.flops_per_token(cfg, 1000) == 6 * 1000 + 12 * 2 * 4 * 16 * 64
    assert 0 < gpt.mfu(cfg, 1000, tokens_per_s=1e6, peak_flops=1e12) < 1


def test_load_task_reports_bad_arguments():
    with pytest.raises(UserError, match="task_args do not fit"):
        load_task("hpcgpu.examples.mlp:make_task", {"nope": 1})
    with pytest.raises(UserError, match="not found"):
        load_task("no_such_pkg.mod:make", {})
    with pytest.raises(UserError, match="has no function"):
        load_task("hpcgpu.examples.mlp:missing", {})
