"""Naming the node that makes a multi-node all-reduce fail or crawl (doctor/bad_nodes.py), with the
measurements given: which pairs are tested, in which order, and what is concluded."""

from __future__ import annotations

from hpcgpu.doctor.bad_nodes import first_pairs, locate


def network(bad: dict[str, float | None], fast: float = 2.0):
    """measure(a, b): `fast` GB/s, unless a node of the pair is bad (its figure; None: fails). Records calls."""
    calls = []

    def measure(a, b):
        calls.append((a, b))
        figures = [bad[n] for n in (a, b) if n in bad]
        return fast if not figures else (None if None in figures else min(figures))
    return measure, calls


def test_pairs_cover_every_node_once_and_an_odd_one_goes_with_the_first():
    assert first_pairs(["a", "b", "c", "d"]) == [("a", "b"), ("c", "d")]
    assert first_pairs(["a", "b", "c"]) == [("a", "b"), ("c", "a")]


def test_a_slow_node_among_three_is_named_in_four_runs():
    measure, calls = network({"c": 0.05})
    found = locate(["a", "b", "c"], measure)
    assert found.bad == ["c"]
    assert calls == [("a", "b"), ("c", "a"), ("a", "b"), ("c", "a")]  # a re-paired with b: fine
    assert "best pair's 2.00 GB/s" in found.reason


def test_a_node_that_cannot_join_is_named():
    measure, _ = network({"f": None})
    assert locate(["a", "b", "c", "d", "e", "f"], measure).bad == ["f"]


def test_two_bad_nodes_in_different_pairs_are_both_named():
    measure, _ = network({"b": None, "c": 0.1})
    assert locate(["a", "b", "c", "d", "e", "f"], measure).bad == ["b", "c"]


def test_a_pair_at_exactly_half_the_best_is_not_slow_and_just_below_is():
    assert locate(["a", "b", "c", "d"], network({"c": 1.0})[0]).bad == []  # 1.0 is 50% of 2.0
    assert locate(["a", "b", "c", "d"], network({"c": 0.99})[0]).bad == ["c"]


def test_healthy_nodes_need_only_the_first_pairs():
    measure, calls = network({})
    found = locate(["a", "b", "c", "d"], measure)
    assert found.bad == [] and calls == [("a", "b"), ("c", "d")]
    assert "every pair reached at least 50%" in found.reason


def test_when_every_pair_is_bad_no_single_node_is_blamed():
    measure, _ = network({"a": None, "b": None, "c": None, "d": None})
    found = locate(["a", "b", "c", "d"], measure)
    assert found.bad == [] and "not one node" in found.reason


def test_two_nodes_cannot_be_told_apart():
    measure, calls = network({"b": None})
    found = locate(["a", "b"], measure)
    assert found.bad == [] and calls == [] and "test 3 or more" in found.reason


def test_node_names_are_read_without_sruns_own_lines():
    from hpcgpu.doctor.slurm_allreduce import node_names_in

    out = ("srun: job 545 queued and waiting for resources\nsrun: job 545 has been allocated resources\n"
           "node3\nnode1\nnode2\n")
    assert node_names_in(out) == ["node1", "node2", "node3"]


def test_every_outcome_whole_pairs_in_the_order_they_ran():
    from hpcgpu.doctor.bad_nodes import Located

    measure, _ = network({"c": 0.05})
    assert locate(["a", "b", "c"], measure) == Located(
        ["c"], [("a", "b", 2.0), ("c", "a", 0.05), ("a", "b", 2.0), ("c", "a", 0.05)],
        "slow or failing with nodes that are fine with others (below 50% of the best pair's 2.00 GB/s, or no result)")
    assert locate(["a", "b"], measure) == Located(
        [], [], "a pair alone cannot tell which of its two nodes is at fault: test 3 or more")
    healthy, _ = network({})
    assert locate(["a", "b", "c", "d"], healthy) == Located(
        [], [("a", "b", 2.0), ("c", "d", 2.0)], "every pair reached at least 50% of the best pair's bandwidth")
    dead, _ = network({n: None for n in "abcd"})
    assert locate(["a", "b", "c", "d"], dead) == Located(
        [], [("a", "b", None), ("c", "d", None)],
        "every pair failed or was slow: the fault is not one node (the network, the partition, or the test itself)")


def test_suspects_are_retested_in_the_nodes_order_and_a_pair_fine_on_retest_blames_nobody():
    from hpcgpu.doctor.bad_nodes import Located

    answers = iter([2.0, 0.1, 2.0, 2.0])  # (a,b) fine, (c,d) slow, then c and d fine with a
    calls = []

    def flaky(x, y):
        calls.append((x, y))
        return next(answers)
    found = locate(["a", "b", "c", "d"], flaky)
    assert calls == [("a", "b"), ("c", "d"), ("c", "a"), ("d", "a")]
    assert found == Located([], [("a", "b", 2.0), ("c", "d", 0.1), ("c", "a", 2.0), ("d", "a", 2.0)],
                            "the bad pairs were fine when re-paired: an intermittent fault, or one between those "
                            "two nodes only")


def test_the_suspects_follow_the_given_order_not_the_alphabet():
    measure, calls = network({"n2": None})
    locate(["n9", "n2", "n1"], measure)  # pairs (n9,n2) bad, (n1,n9) fine
    assert calls[:2] == [("n9", "n2"), ("n1", "n9")]
    assert calls[2:] == [("n9", "n1"), ("n2", "n1")]  # n9 before n2: the nodes' order
