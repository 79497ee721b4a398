"""What node 0 does after a hang under Slurm (backends/slurm/node_hangs.decide): requeue without the
hung node, or end the job, and why."""

from __future__ import annotations

import json

from hpcgpu.backends.slurm import node_hangs
from hpcgpu.backends.slurm.node_hangs import HangDecision, decide
from hpcgpu.contract.runfiles import load_excluded

NODES = ["node1", "node2", "node3"]


def report(culprits, hosts):
    """A hang report: ranks 0..n-1 on hosts[i]; culprits by rank."""
    return {"culprits": list(culprits), "ranks": [{"rank": i, "host": h} for i, h in enumerate(hosts)]}


def test_the_node_of_the_rank_behind_is_excluded_and_the_job_requeued():
    d = decide([report([1], ["node1", "node2"])], [], 0, 2, 2, NODES)
    assert d == HangDecision(True, ("node2",), "rank(s) 1 hung on node2")


def test_exclusions_accumulate_across_hangs():
    reports = [report([1], ["node1", "node2"]), report([0], ["node3", "node1"])]
    assert decide(reports, ["node2"], 1, 2, 1, NODES).exclude == ("node2", "node3")


def test_a_rank_that_hangs_again_on_another_node_is_not_blamed_on_the_node():
    reports = [report([1], ["node1", "node2"]), report([1], ["node1", "node3"])]
    d = decide(reports, ["node2"], 1, 5, 2, NODES + ["node4"])
    assert not d.requeue and d.exclude == ("node2",)
    assert d.reason == ("rank 1 hung on node2 before and on node3 now: it hangs wherever it runs (its code or data), "
                        "not because of a node")


def test_the_same_rank_hanging_again_on_the_same_node_is_still_the_node():
    reports = [report([1], ["node1", "node2"]), report([1], ["node1", "node2"])]
    assert decide(reports, [], 1, 2, 2, NODES).requeue  # e.g. excluded, but the update was lost


def test_no_rank_behind_means_no_node_to_blame():
    d = decide([report([], ["node1", "node2"])], [], 0, 2, 2, NODES)
    assert not d.requeue and "no node to blame" in d.reason


def test_requeues_stop_at_the_limit():
    d = decide([report([1], ["node1", "node2"])], [], 2, 2, 2, NODES)
    assert not d.requeue and d.reason == "watchdog.requeues (2) used up"
    assert not decide([report([1], ["node1", "node2"])], [], 0, 0, 2, NODES).requeue  # 0: never


def test_no_requeue_when_the_partition_has_no_spare_node():
    d = decide([report([1], ["node1", "node2"])], [], 0, 2, 2, ["node1", "node2"])
    assert not d.requeue and d.reason == "without node2 the partition has 1 node(s) for a job of 2"
    assert decide([report([1], ["node1", "node2"])], [], 0, 2, 1, ["node1", "node2"]).requeue


def test_without_a_report_nothing_is_requeued():
    assert not decide([], [], 0, 2, 1, NODES).requeue


def test_an_exclusion_is_recorded_for_status(tmp_path):
    assert load_excluded(tmp_path) == {"nodes": [], "requeues": 0, "history": []}
    node_hangs.record_exclusion(tmp_path, HangDecision(True, ("node2",), "rank(s) 1 hung on node2"), "42")
    node_hangs.record_exclusion(tmp_path, HangDecision(True, ("node2", "node3"), "rank(s) 0 hung on node3"), "42")
    done = load_excluded(tmp_path)
    assert (done["nodes"], done["requeues"]) == (["node2", "node3"], 2)
    assert [h["reason"] for h in done["history"]] == ["rank(s) 1 hung on node2", "rank(s) 0 hung on node3"]
    assert oct((tmp_path / "excluded.json").stat().st_mode & 0o777) == "0o600"


def test_reports_are_read_oldest_first(tmp_path):
    for stamp, culprits in (("20261202-120000", [1]), ("20261202-110000", [0])):
        (tmp_path / f"hang-{stamp}.md").write_text("x")
        (tmp_path / f"hang-{stamp}.json").write_text(json.dumps(report(culprits, ["a", "b"])))
    assert [r["culprits"] for r in node_hangs.load_reports(tmp_path)] == [[0], [1]]
