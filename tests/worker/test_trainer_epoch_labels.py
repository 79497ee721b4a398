"""Progress lines name the epoch a step belongs to (issue 13, item 5: the last step of epoch 0
was shown as `step 32/32 epoch 1`), and the summary says which loss it prints."""

from __future__ import annotations

import re

import pytest

from tests.helpers.demo_baseline import SPEC, demo_baseline


@pytest.mark.slow
def test_each_step_line_shows_the_epoch_it_belongs_to(tmp_path_factory):
    # 1024 samples / 2 ranks / batch 16 = 32 steps per epoch, 2 epochs, a line every 16 steps: the
    # session's shared demo run is that run (tests/helpers/demo_baseline.py)
    assert (SPEC["entry"]["task_args"]["n_samples"], SPEC["train"]["batch_size"], SPEC["train"]["epochs"],
            SPEC["train"]["log_every"]) == (1024, 16, 2, 16)
    result = demo_baseline(tmp_path_factory)
    assert result.rc == 0, result.explain()
    lines = re.findall(r"^step (\d+)/64 epoch (\d+) ", result.log(0), re.MULTILINE)
    assert [(int(s), int(e)) for s, e in lines] == [(16, 0), (32, 0), (48, 1), (64, 1)]
    assert "(the last step, mean over ranks)" in result.log(0)
