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
    assert [(h["job"], h["nodes"]) for h in done["history"]] == [("42", ["node2"]), ("42", ["node2", "node3"])]
    assert all(abs(h["time"] - __import__("time").time()) < 60 for h in done["history"])
    assert oct((tmp_path / "excluded.json").stat().st_mode & 0o777) == "0o600"


def test_reports_are_read_oldest_first(tmp_path):
    for stamp, culprits in (("20261202-120000", [1]), ("20261202-110000", [0])):
        (tmp_path / f"hang-{stamp}.md").write_text("x")
        (tmp_path / f"hang-{stamp}.json").write_text(json.dumps(report(culprits, ["a", "b"])))
    assert [r["culprits"] for r in node_hangs.load_reports(tmp_path)] == [[0], [1]]


# -- every outcome whole: the decision, what stays excluded, the words --------------------------------


def test_each_refusal_keeps_the_earlier_exclusions_and_says_why_in_full():
    one = [report([1], ["node1", "node2"])]
    assert decide([], ["node9"], 0, 2, 1, NODES) == HangDecision(
        False, ("node9",), "no hang report was found in the run directory")
    assert decide([report([], ["node1", "node2"])], ["node9"], 0, 2, 1, NODES) == HangDecision(
        False, ("node9",), "no rank was behind the others (they all waited at the same place): no node to blame")
    assert decide(one, ["node9"], 2, 2, 1, NODES) == HangDecision(False, ("node9",), "watchdog.requeues (2) used up")
    assert decide(one, ["node3", "node1"], 0, 2, 2, NODES) == HangDecision(
        False, ("node1", "node3"), "without node1, node2, node3 the partition has 0 node(s) for a job of 2")


def test_a_rank_that_moved_is_found_among_several_earlier_reports():
    reports = [report([0], ["node1", "node2"]), report([1], ["node1", "node2"]), report([0], ["node3", "node2"])]
    # rank 0 hung on node1 first and now on node3: it moved (the middle report, rank 1, is about another rank)
    assert decide(reports, ["node1", "node2"], 2, 5, 1, NODES + ["node4"]) == HangDecision(
        False, ("node1", "node2"), "rank 0 hung on node1 before and on node3 now: it hangs wherever it runs (its "
                                   "code or data), not because of a node")


def test_the_requeue_names_every_rank_and_node_behind():
    d = decide([report([2, 0], ["node1", "node2", "node3"])], [], 0, 2, 1, NODES + ["node4"])
    assert d == HangDecision(True, ("node1", "node3"), "rank(s) 0, 2 hung on node1, node3")


def test_culprit_hosts_name_an_unknown_host_as_a_question_mark():
    assert node_hangs.culprit_hosts({"culprits": [1, 5], "ranks": [{"rank": 1}, {"rank": 2, "host": "n"}]}) == \
        {1: "?", 5: "?"}
    assert node_hangs.culprit_hosts({}) == {}


# -- Slurm's commands, through fake scontrol/sinfo on PATH (what they are asked, in which order) ----------


def fake_tools(tmp_path, monkeypatch, fail: str = ""):
    """scontrol and sinfo that log their arguments and whether SIGTERM is ignored (SigIgn bit 15)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool, out in (("scontrol", ""), ("sinfo", "node2\nnode1\nnode2\nnode3\n")):
        (bin_dir / tool).write_text(
            "#!/bin/sh\n"
            f"ign=$(awk '/^SigIgn/ {{print $2}}' /proc/$$/status)\n"
            f"echo \"{tool} $* sigign=$ign\" >> {log}\n"
            f"case \"$*\" in *{fail or 'NEVER'}*) echo refused >&2; exit 1;; esac\n"
            f"printf '{out}'\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return log


def sigterm_ignored(line: str) -> bool:
    return bool(int(line.rsplit("sigign=", 1)[1], 16) & (1 << 14))  # bit 15 - 1: SIGTERM


def test_the_requeue_holds_updates_and_releases_the_job_immune_to_the_steps_sigterm(tmp_path, monkeypatch):
    log = fake_tools(tmp_path, monkeypatch)
    assert node_hangs.requeue_without("42", ["node1", "node3"]) is None
    calls = log.read_text().splitlines()
    assert [c.split(" sigign=")[0] for c in calls] == [
        "scontrol requeuehold 42", "scontrol update JobId=42 ExcNodeList=node1,node3", "scontrol release 42"]
    assert all(sigterm_ignored(c) for c in calls)


def test_a_failed_update_still_releases_the_job_and_says_what_slurm_said(tmp_path, monkeypatch):
    log = fake_tools(tmp_path, monkeypatch, fail="update")
    assert node_hangs.requeue_without("42", ["node1"]) == "`scontrol update JobId=42 ExcNodeList=node1`: refused"
    assert log.read_text().splitlines()[-1].startswith("scontrol release 42")


def test_a_refused_hold_stops_there(tmp_path, monkeypatch):
    log = fake_tools(tmp_path, monkeypatch, fail="requeuehold")
    assert node_hangs.requeue_without("7_3", ["n"]) == "`scontrol requeuehold 7_3`: refused"
    assert len(log.read_text().splitlines()) == 1


def test_partition_nodes_are_sinfos_names_once_each(tmp_path, monkeypatch):
    log = fake_tools(tmp_path, monkeypatch)
    assert node_hangs.partition_nodes("wide") == ["node1", "node2", "node3"]
    assert log.read_text().split(" sigign=")[0] == "sinfo -h -N -o %N -p wide"
    assert node_hangs.partition_nodes(None) == ["node1", "node2", "node3"]
    assert log.read_text().splitlines()[-1].split(" sigign=")[0] == "sinfo -h -N -o %N"


def test_partition_nodes_without_sinfo_are_none(tmp_path, monkeypatch):
    fake_tools(tmp_path, monkeypatch, fail="-h")
    assert node_hangs.partition_nodes("wide") == []
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert node_hangs.partition_nodes("wide") == []
