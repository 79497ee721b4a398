"""watchdog.stall_s: its documented default, the off switch, and what the plan does with it."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import parse_spec
from tests.helpers.plans import plan_for


def test_the_watchdog_is_on_by_default_with_a_stall_of_120_s():
    assert parse_spec("name: x\n").watchdog.stall_s == 120  # docs/troubleshooting.md, docs/spec.md


def test_zero_turns_it_off_and_a_negative_stall_is_refused_naming_the_key():
    assert parse_spec("watchdog: {stall_s: 0}\n").watchdog.stall_s == 0
    with pytest.raises(UserError, match=r"watchdog.stall_s \(line 1\): Input should be greater than or equal to 0"):
        parse_spec("watchdog: {stall_s: -1}\n", "job.yaml")


def test_with_the_watchdog_on_the_ranks_keep_a_flight_record_and_off_they_do_not():
    on = plan_for("name: x\n")
    assert on.env["TORCH_FR_BUFFER_SIZE"] == "1000"
    assert any(n.startswith("TORCH_FR_BUFFER_SIZE=1000 (watchdog:") for n in on.env_notes)
    off = plan_for("watchdog: {stall_s: 0}\n")
    assert "TORCH_FR_BUFFER_SIZE" not in off.env and "TORCH_NCCL_TRACE_BUFFER_SIZE" not in off.env


def test_a_flight_record_size_the_user_set_wins():
    plan = plan_for("env: {TORCH_FR_BUFFER_SIZE: '50'}\n")
    assert plan.env["TORCH_FR_BUFFER_SIZE"] == "50"


def test_the_dry_run_says_what_the_watchdog_will_do():
    from hpcgpu.host.plan import describe_plan

    assert ("watchdog: hang report after 120 s without progress on any rank, then end the run with status 76"
            in describe_plan(plan_for("name: x\n")))
    assert "then restart the ranks (distributed.max_restarts 2)" in describe_plan(
        plan_for("distributed: {max_restarts: 2}\nwatchdog: {stall_s: 30}\n"))
    assert "watchdog: off (watchdog.stall_s 0)" in describe_plan(plan_for("watchdog: {stall_s: 0}\n"))


def test_the_slurm_dry_run_adds_the_requeue_without_the_hung_node():
    from hpcgpu.host.plan import watchdog_text

    spec = plan_for("name: x\n").spec
    assert watchdog_text(spec, slurm=True).endswith(
        "then end the run with status 76; a job requeues without the hung node, up to 2 times (watchdog.requeues)")
    assert "requeues" not in watchdog_text({**spec, "watchdog": {"stall_s": 5, "requeues": 0}}, slurm=True)
