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


def test_mlp_evaluation_set_is_held_out_and_leaves_the_training_set_as_it_was():
    with_eval, without = mlp.make_task(n_samples=64, n_eval=50), mlp.make_task(n_samples=64, n_eval=0)
    assert without.eval_dataset is None and len(with_eval.eval_dataset) == 50
    for a, b in zip(with_eval.dataset.tensors, without.dataset.tensors):
        assert torch.equal(a, b)  # the demo trains on the same data whatever n_eval
    x_train, x_eval = with_eval.dataset.tensors[0], with_eval.eval_dataset.tensors[0]
    assert not any(torch.equal(x, e) for x in x_train for e in x_eval[:5])
    logits = with_eval.model()(x_eval[:4])
    got = with_eval.eval_metrics(logits, with_eval.eval_dataset.tensors[1][:4])
    assert got["loss"].shape == got["accuracy"].shape == (4,)
    assert set(got["accuracy"].tolist()) <= {0.0, 1.0}


def test_gpt_holds_out_the_tail_of_the_text_in_windows_that_do_not_overlap(tmp_path):
    task = gpt.make_task(block_size=32, n_layer=1, n_head=2, n_embd=32)
    text = len(gpt.DATA.read_text(encoding="utf-8"))
    held = int(text * 0.1)
    assert len(task.eval_dataset) == (held - 33) // 32 + 1
    assert task.eval_dataset.stride == 32
    # training windows end before the held-out tail starts
    assert task.dataset.data.shape[0] == text - held
    assert gpt.make_task(block_size=32, n_layer=1, n_head=2, n_embd=32, eval_fraction=0).eval_dataset is None
    (tmp_path / "t.txt").write_text("abcdefghij" * 100)
    with pytest.raises(UserError, match="holds out 20 characters, fewer than one window"):
        gpt.make_task(block_size=32, n_layer=1, n_head=2, n_embd=32, eval_fraction=0.02,
                      text_file=str(tmp_path / "t.txt"))
