"""An async save copies the state into the previous save's snapshot when it fits (hpcgpu/worker/
state.py snapshot(reuse=), saver.py): the stall is a plain copy into memory already touched. Each
checkpoint still holds exactly the state of its own step."""

from __future__ import annotations

import torch

from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker.saver import Checkpointer
from hpcgpu.worker.state import snapshot


def make_state(value: float, n: int = 1000) -> dict:
    return {"model": {"w": torch.full((n,), value), "b": torch.zeros(3)}, "rng": [torch.tensor([1, 2], dtype=torch.uint8)],
            "step": int(value)}


def test_each_async_checkpoint_holds_its_own_step_while_the_copy_is_reused(tmp_path):
    saver = Checkpointer(tmp_path, keep_last=3, async_save=True, is_main=True, report=lambda s: None)
    state = make_state(1.0)
    saver.save(1, state)
    saver.wait()
    first_copy = saver._copy["model"]["w"]
    state["model"]["w"].fill_(2.0)  # the loop goes on, in place
    state["step"] = 2
    saver.save(2, state)
    saver.wait()
    assert saver._copy["model"]["w"].data_ptr() == first_copy.data_ptr()  # no new allocation
    one = ckpt.load_state(tmp_path / ckpt.step_dir_name(1))
    two = ckpt.load_state(tmp_path / ckpt.step_dir_name(2))
    assert torch.equal(one["model"]["w"], torch.full((1000,), 1.0)) and one["step"] == 1
    assert torch.equal(two["model"]["w"], torch.full((1000,), 2.0)) and two["step"] == 2
    state["model"]["w"].fill_(3.0)
    assert torch.equal(saver._copy["model"]["w"], torch.full((1000,), 2.0))  # a copy, not the live tensor


def test_a_tensor_that_changed_shape_or_dtype_gets_fresh_memory():
    old = snapshot(make_state(1.0))
    new_state = make_state(2.0, n=10)
    new_state["model"]["b"] = torch.zeros(3, dtype=torch.float64)
    new = snapshot(new_state, reuse=old)
    assert new["model"]["w"].data_ptr() != old["model"]["w"].data_ptr() and new["model"]["w"].shape == (10,)
    assert new["model"]["b"].dtype == torch.float64 and new["model"]["b"].data_ptr() != old["model"]["b"].data_ptr()
    assert new["rng"][0].data_ptr() == old["rng"][0].data_ptr()  # same shape and dtype: reused
    assert torch.equal(new["model"]["w"], torch.full((10,), 2.0))


def test_a_synchronous_save_keeps_no_copy(tmp_path):
    saver = Checkpointer(tmp_path, keep_last=2, async_save=False, is_main=True, report=lambda s: None)
    saver.save(1, make_state(1.0))
    assert saver._copy is None
