"""A run resumed on another number of ranks ends where train.epochs ends (issue 13, item 5: 2 ranks
resumed on 4 ended at `2.31 epochs` for `epochs: 2`): the steps left are counted in the new world
size's steps, from the position kept in samples."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers.launch import demo_spec, run


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [(4, 2), (2, 4)])
def test_resuming_on_another_world_size_ends_at_the_last_epoch(tmp_path, first, then):
    # 1024 samples, batch 16: 16 steps per epoch on 4 ranks, 32 on 2; checkpoint every 10 steps
    spec = demo_spec(train={"epochs": 2}, checkpoint={"every_steps": 10, "keep_last": 10})
    one = run(tmp_path / "a", spec, nproc=first)
    assert one.rc == 0, one.explain()
    step10 = tmp_path / "a" / "checkpoints" / "step_00000010"
    shutil.copytree(step10, tmp_path / "b" / "checkpoints" / step10.name)
    two = run(tmp_path / "b", spec, nproc=then)
    assert two.rc == 0, two.explain()
    summary = two.summary()
    samples_done = 10 * 16 * first  # step 10 of the first run, in samples
    steps_left = (2 * 1024 - samples_done) // (16 * then)
    assert summary["steps"] == 10 + steps_left
    assert "(2.00 epochs)" in two.log(0)
    total = 10 + steps_left  # the progress lines count to the recounted end, not the first run's
    assert f"step {total}/{total} " in two.log(0), two.log(0)[-2000:]
