"""The documented precedence of the ranks' environment (docs/architecture.md: hpcgpu's defaults <
the spec's `env:` < your own environment) through the whole chain: the plan the host builds and the
environment a node agent gives its ranks. A value you exported is never replaced by the spec's."""

from __future__ import annotations

from hpcgpu.agent.node import rank_environment
from tests.helpers.plans import plan_for

SPEC = "resources: {gpus_per_node: 0, procs_per_node: 1}\nenv: {NCCL_SOCKET_IFNAME: eth0, OMP_NUM_THREADS: '4'}\n"


def ranks_see(plan, node_environ: dict) -> dict:
    """What a rank's environment holds: the node's own, with the plan's variables on top."""
    return {**node_environ, **rank_environment(plan, node_environ, {})}


def test_a_value_you_exported_wins_over_the_spec_env_on_the_ranks():
    user = {"NCCL_SOCKET_IFNAME": "ib0"}
    plan = plan_for(SPEC, environ=user)
    assert "NCCL_SOCKET_IFNAME" not in plan.env
    assert "NCCL_SOCKET_IFNAME: spec env sets it, your environment's value wins" in plan.env_notes
    assert ranks_see(plan, user)["NCCL_SOCKET_IFNAME"] == "ib0"


def test_the_spec_env_wins_over_hpcgpus_default_when_you_exported_nothing():
    plan = plan_for(SPEC, environ={})
    assert plan.env["OMP_NUM_THREADS"] == "4" and plan.env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert ranks_see(plan, {})["OMP_NUM_THREADS"] == "4"


def test_a_value_you_exported_wins_over_both_the_default_and_the_spec_env():
    user = {"OMP_NUM_THREADS": "8"}
    plan = plan_for(SPEC, environ=user)
    assert "OMP_NUM_THREADS" not in plan.env
    assert ranks_see(plan, user)["OMP_NUM_THREADS"] == "8"
    assert any(n.startswith("OMP_NUM_THREADS: keeping your value 8") for n in plan.env_notes)


def test_hpcgpus_default_applies_when_neither_sets_it():
    plan = plan_for("resources: {gpus_per_node: 0, procs_per_node: 1}\n", environ={})
    assert ranks_see(plan, {})["OMP_NUM_THREADS"] == "1"
