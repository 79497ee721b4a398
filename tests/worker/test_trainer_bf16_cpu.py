"""bf16 autocast on CPU ranks (issue 13, item 5): torch.autocast("cpu", torch.bfloat16) works, so
the Trainer runs it (with a note on speed) instead of refusing it; fp16 on CPU stays refused."""

from __future__ import annotations

import pytest

from tests.helpers.launch import demo_spec, run


@pytest.mark.slow
def test_the_demo_trains_with_bf16_on_two_cpu_ranks(tmp_path):
    result = run(tmp_path, demo_spec(train={"precision": "bf16"}))
    assert result.rc == 0, result.explain()
    log = result.log(0)
    assert "ddp on 2 rank(s) x cpu, bf16" in log
    assert "bf16 autocast on CPUs saves memory but is often slower than fp32" in log
    assert float(result.final_loss) < 2.3  # it learned (ln 10 = 2.30 at chance)
