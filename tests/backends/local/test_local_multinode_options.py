"""`run local --nnodes N --node-rank R --rdzv-endpoint HOST:PORT --rdzv-id ID` on the host side: the
flags checked together (every refusal names the flag and the fix), the run id and run dirs the
nodes share, this node's part in the plan (found again on --resume), the dry run's node section.
The run itself, over two network namespaces: test_local_multinode_netns.py."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from hpcgpu.backends.local.multinode import MultiNode, multinode_options, node_request, parse_nnodes
from hpcgpu.cli import cli
from hpcgpu.contract.errors import UserError
from hpcgpu.host import launch
from hpcgpu.host.spec import parse_spec
from tests.helpers.plans import facts, plan_for

GOOD = dict(nnodes=2, node_rank=1, endpoint="10.0.0.1:29400", rdzv_id="exp1")


def refusal(**over) -> UserError:
    with pytest.raises(UserError) as info:
        multinode_options(**{**GOOD, **over})
    return info.value


def test_good_flags_make_this_nodes_place():
    assert multinode_options(**GOOD) == MultiNode(2, 1, "10.0.0.1:29400", "exp1")


@pytest.mark.parametrize("text, nodes", [(None, None), ("2", 2), ("4:4", 4)])
def test_nnodes_is_a_number_or_torchruns_n_to_n(text, nodes):
    assert parse_nnodes(text) == nodes


def test_elastic_membership_is_refused_with_the_reason_and_the_fix():
    with pytest.raises(UserError) as info:
        parse_nnodes("1:4")
    assert "--nnodes 1:4: elastic membership" in info.value.message and "fixes the world size" in info.value.message
    assert "--nnodes 4" in info.value.hint


@pytest.mark.parametrize("text", ["two", "2:x", "0", ""])
def test_a_bad_nnodes_is_named(text):
    with pytest.raises(UserError, match="--nnodes"):
        parse_nnodes(text)


@pytest.mark.parametrize("missing", ["node_rank", "endpoint", "rdzv_id"])
def test_several_nodes_need_every_flag_and_say_which_is_missing(missing):
    flag = {"node_rank": "--node-rank", "endpoint": "--rdzv-endpoint", "rdzv_id": "--rdzv-id"}[missing]
    error = refusal(**{missing: None})
    assert error.message.startswith(f"--nnodes 2 needs {flag}:") and "--node-rank 1" in error.hint


def test_a_node_rank_outside_the_nodes_is_refused():
    assert "--node-rank 2 is outside 0..1 (--nnodes 2)" in refusal(node_rank=2).message
    assert "--node-rank -1 is outside" in refusal(node_rank=-1).message


def test_an_endpoint_without_a_port_is_refused_naming_the_flag():
    error = refusal(endpoint="head")
    assert error.message.startswith("--rdzv-endpoint: rendezvous endpoint 'head' is not HOST:PORT")


@pytest.mark.parametrize("rdzv_id", ["a b", "../x", "-x", "x" * 65, ""])
def test_an_rdzv_id_that_cannot_name_a_directory_is_refused(rdzv_id):
    assert refusal(rdzv_id=rdzv_id).message.startswith(f"--rdzv-id {rdzv_id!r}")


@pytest.mark.parametrize("nnodes", [None, 1])
def test_node_flags_without_several_nodes_are_refused(nnodes):
    error = refusal(nnodes=nnodes, endpoint=None, rdzv_id=None)
    assert error.message.startswith("--node-rank goes with --nnodes 2 or more") and "drop --node-rank" in error.hint


def test_one_run_id_on_every_node_and_a_run_dir_per_node():
    head, other = MultiNode(2, 0, "h:1", "exp1"), MultiNode(2, 1, "h:1", "exp1")
    assert head.run_id("demo") == other.run_id("demo") == "demo-exp1"
    assert (head.dir_name("demo"), other.dir_name("demo")) == ("demo-exp1", "demo-exp1-node1")


# ---------------------------------------------------------------- this node's part of the plan


def test_the_plan_carries_this_nodes_rank_and_endpoint():
    plan = plan_for("resources: {nodes: 2, gpus_per_node: 0}\n", environ=MultiNode(**GOOD).environ())
    assert plan.request == {"node_rank": 1, "rdzv_endpoint": "10.0.0.1:29400"}
    assert [r.node for r in plan.ranks] == [0, 0, 1, 1]


def test_a_resumed_node_finds_its_place_in_its_previous_plan():
    previous = {"node_rank": 1, "rdzv_endpoint": "10.0.0.1:29400"}
    assert node_request(2, {}, previous) == previous
    # what the user sets now wins (the head moved)
    assert node_request(2, {"HPCGPU_RDZV_ENDPOINT": "10.0.0.7:29400"}, previous)["rdzv_endpoint"] == "10.0.0.7:29400"


def test_a_multi_node_spec_started_without_the_flags_says_how_to_start_it():
    with pytest.raises(UserError) as info:
        plan_for("resources: {nodes: 2, gpus_per_node: 0}\n")
    assert "resources.nodes is 2, but this node does not know where it sits" in info.value.message
    assert "--nnodes 2 --node-rank 0 --rdzv-endpoint" in info.value.hint


def test_a_node_rank_from_the_environment_is_checked_too():
    with pytest.raises(UserError, match="HPCGPU_NODE_RANK=5 is not a node rank of a run over 2 nodes"):
        node_request(2, {"HPCGPU_NODE_RANK": "5", "HPCGPU_RDZV_ENDPOINT": "h:1"}, None)


# ---------------------------------------------------------------- run dirs the nodes share a file system in


def test_a_named_run_dir_that_another_run_used_is_refused(tmp_path):
    spec = parse_spec("name: demo\nresources: {gpus_per_node: 0}\n")
    name = launch.RunName("demo-exp1", "demo-exp1")
    plan = launch.plan_new(spec, "local", facts(cwd=str(tmp_path)), name)
    assert plan.run_id == "demo-exp1" and plan.run_dir == str(tmp_path / "runs" / "demo-exp1")
    (tmp_path / "runs" / "demo-exp1").mkdir(parents=True)  # made early by another node: fine
    assert launch._reserve_named_run_dir(plan) is plan
    (tmp_path / "runs" / "demo-exp1" / "run.json").write_text("{}")  # a run that already ran: refused
    with pytest.raises(UserError) as info:
        launch._reserve_named_run_dir(plan)
    assert "run demo-exp1 already ran here" in info.value.message and "new --rdzv-id" in info.value.hint


def test_the_dry_run_shows_this_nodes_part(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPCGPU_HOME", str(tmp_path / "home"))
    args = ["run", "local", "--nproc", "1", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint",
            "127.0.0.1:29400", "--rdzv-id", "exp1", "--dry-run"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert f"run dir:  {tmp_path}/runs/demo-exp1-node1" in out.output
    assert "this node: node 1 of 2" in out.output and "rendezvous: 127.0.0.1:29400, id demo-exp1" in out.output
    assert "network:    the address this node uses to reach the rendezvous endpoint 127.0.0.1:29400: a loopback" in out.output
    plan = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    assert plan["request"] == {"node_rank": 1, "rdzv_endpoint": "127.0.0.1:29400"} and plan["nodes"] == 2
    assert "HPCGPU_NODE_RANK" not in os.environ  # this node's place went into the plan, not into the process


def test_the_dry_run_of_node_0_away_from_the_endpoint_says_the_run_would_stop(tmp_path, monkeypatch):
    from tests.agent.test_agent_rendezvous import non_loopback_address

    if non_loopback_address() is None:
        pytest.skip("no route off this machine: 203.0.113.1 cannot be reached at all")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPCGPU_HOME", str(tmp_path / "home"))
    out = CliRunner().invoke(cli, ["run", "local", "--nproc", "1", "--nnodes", "2", "--node-rank", "0",
                                   "--rdzv-endpoint", "203.0.113.1:29400", "--rdzv-id", "x", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "error:      203.0.113.1 is not an address of this node: node 0 must run at the endpoint" in out.output
