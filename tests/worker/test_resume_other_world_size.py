"""A run resumed on another number of ranks ends where train.epochs ends (issue 13, item 5: 2 ranks
resumed on 4 ended at `2.31 epochs` for `epochs: 2`): the steps left are counted in the new world
size's steps, from the position kept in samples.

Both directions in one chain of three runs: 2 ranks, resumed on 4 from its step 10, and that 4-rank
run resumed on 2 from its own step 20 (a checkpoint written on 4 ranks). The 2-rank run is the
session's shared uninterrupted demo run (tests/helpers/demo_baseline.py), which keeps every
checkpoint; the resumed runs keep theirs too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import demo_baseline
from tests.helpers.launch import demo_spec, run

SAMPLES, BATCH, EPOCHS = 1024, 16, 2


def resume_from(checkpoints: Path, step: int, base: Path, spec: dict, nproc: int):
    """A run on nproc ranks in base, from a copy of the checkpoint of that step."""
    saved = checkpoints / f"step_{step:08d}"
    shutil.copytree(saved, base / "checkpoints" / saved.name)
    result = run(base, spec, nproc=nproc)
    assert result.rc == 0, result.explain()
    return result


def assert_ends_at_the_last_epoch(result, step: int, samples_done: int, nproc: int) -> int:
    steps_left = (EPOCHS * SAMPLES - samples_done) // (BATCH * nproc)
    assert samples_done + steps_left * BATCH * nproc == EPOCHS * SAMPLES  # ends exactly on the last epoch's end
    total = step + steps_left
    assert result.summary()["steps"] == total
    assert "(2.00 epochs)" in result.log(0)
    # the progress lines count to the recounted end, not the first run's
    assert f"step {total}/{total} " in result.log(0), result.log(0)[-2000:]
    return total


@pytest.mark.slow
def test_resuming_on_another_world_size_ends_at_the_last_epoch(tmp_path, tmp_path_factory):
    # 1024 samples, batch 16: 32 steps per epoch on 2 ranks, 16 on 4; checkpoint every 10 steps
    spec = demo_spec(train={"epochs": EPOCHS}, checkpoint={"every_steps": 10, "keep_last": 10})
    first = demo_baseline.demo_baseline(tmp_path_factory)  # rc 0 asserted where it ran
    assert (first.rc, demo_baseline.SPEC["train"]["epochs"], demo_baseline.SPEC["checkpoint"]["every_steps"]) == \
        (0, EPOCHS, 10)

    # 2 -> 4: step 10 of 2 ranks is 320 samples
    on4 = resume_from(first.base / "checkpoints", 10, tmp_path / "b", spec, nproc=4)
    samples_at_20 = 10 * BATCH * 2 + 10 * BATCH * 4
    assert assert_ends_at_the_last_epoch(on4, 10, 10 * BATCH * 2, nproc=4) > 20

    # 4 -> 2: step 20 of the 4-rank run (10 steps on 2 ranks, then 10 on 4) is 960 samples
    on2 = resume_from(tmp_path / "b" / "checkpoints", 20, tmp_path / "c", spec, nproc=2)
    assert_ends_at_the_last_epoch(on2, 20, samples_at_20, nproc=2)
