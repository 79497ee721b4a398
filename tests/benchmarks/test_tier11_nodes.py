"""benchmarks/tier11_nodes.py: which partition the tier uses and which node counts fit in it."""

from __future__ import annotations

from benchmarks.tier11_nodes import NODE_COUNTS, parse_partitions, plan_counts

# `scontrol show partition -o` of the local cluster started with HPCGPU_SLURM_NODES=8 (fields shortened)
SCONTROL = (
    "PartitionName=debug AllowGroups=ALL Default=YES Nodes=node[1-2] State=UP TotalCPUs=8 TotalNodes=2 SelectTypeParameters=NONE\n"
    "PartitionName=wide AllowGroups=ALL Default=NO Nodes=node[1-3] State=UP TotalCPUs=12 TotalNodes=3 SelectTypeParameters=NONE\n"
    "PartitionName=scale AllowGroups=ALL Default=NO Nodes=node[1-8] State=UP TotalCPUs=32 TotalNodes=8 SelectTypeParameters=NONE\n"
)


def test_partitions_and_their_node_counts():
    assert parse_partitions(SCONTROL) == {"debug": 2, "wide": 3, "scale": 8}
    assert parse_partitions("") == {}


def test_eight_nodes_run_every_count_in_scale():
    assert plan_counts(NODE_COUNTS, parse_partitions(SCONTROL)) == ("scale", [1, 2, 4, 8], [])


def test_the_default_three_nodes_run_1_and_2_in_wide_and_skip_the_rest():
    three = "\n".join(SCONTROL.splitlines()[:2])
    assert plan_counts(NODE_COUNTS, parse_partitions(three)) == ("wide", [1, 2], [4, 8])


def test_of_equal_partitions_the_first_listed_wins_and_none_skips_everything():
    assert plan_counts((1, 2), {"a": 2, "b": 2})[0] == "a"
    assert plan_counts((1, 2), {}) == ("", [], [1, 2])
