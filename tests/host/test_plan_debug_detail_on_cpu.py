"""debug.torch_distributed: detail on CPU ranks: torch's DETAIL mode segfaults DDP set-up over gloo
(seen with torch 2.13, plain torchrun too), so a Trainer run is refused before anything starts,
and a script's plan carries a warning (issue 13, item 5)."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import apply_overrides, parse_spec
from tests.helpers.plans import plan_for


def plan(text: str, visible: int = 0):
    return plan_for(apply_overrides(parse_spec(text), {}), run_id="r-1", run_dir="/runs/r-1",
                    visible_gpus=visible, environ={})


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_detail_with_the_trainer_on_cpu_is_refused_naming_the_key(strategy):
    with pytest.raises(UserError) as info:
        plan(f"train: {{strategy: {strategy}}}\ndebug: {{torch_distributed: detail}}\n")
    assert "debug.torch_distributed is detail" in info.value.message and "SIGSEGV" in info.value.message
    assert strategy.upper() in info.value.message
    assert "debug.torch_distributed: info" in info.value.hint


def test_detail_on_gpus_and_info_on_cpu_are_planned():
    assert plan("debug: {torch_distributed: detail}\n", visible=2).env["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL"
    assert plan("debug: {torch_distributed: info}\n").env["TORCH_DISTRIBUTED_DEBUG"] == "INFO"


def test_a_script_with_detail_on_cpu_is_planned_with_a_warning(tmp_path):
    p = plan("entry: {script: train.py}\ndebug: {torch_distributed: detail}\n")
    warnings = [n for n in p.env_notes if n.startswith("warning: TORCH_DISTRIBUTED_DEBUG=DETAIL")]
    assert len(warnings) == 1 and "SIGSEGV" in warnings[0]
    assert not any("DETAIL on CPU" in n for n in plan("entry: {script: train.py}\n").env_notes)


def test_the_refusal_says_what_works_instead():
    with pytest.raises(UserError) as info:
        plan("debug: {torch_distributed: detail}\n")
    assert info.value.hint == "use debug.torch_distributed: info on CPU, or detail with GPUs"


def test_the_script_warning_says_what_crashes_and_what_to_use():
    (warning,) = [n for n in plan("entry: {script: train.py}\ndebug: {torch_distributed: detail}\n").env_notes
                  if n.startswith("warning: TORCH_DISTRIBUTED_DEBUG=DETAIL")]
    assert "a script wraps a model in DDP over gloo in this mode" in warning
    assert warning.endswith("use debug.torch_distributed: info")


def test_dp_with_detail_on_cpu_is_planned_without_refusal_or_warning():
    # dp is one process driving its devices: no process group, so DETAIL's DDP crash cannot happen
    p = plan("train: {strategy: dp}\ndebug: {torch_distributed: detail}\n")
    assert p.env["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL"
    assert not any("DETAIL on CPU" in n for n in p.env_notes)
