"""The hang watchdog end to end: real `hpcgpu run local`, gloo ranks on CPU, real hangs.

Each run has watchdog.stall_s = 3 and the default distributed.timeout_s (600 s), so a run that
ends within the test's wait ended because the watchdog found the hang, not the process group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.relkit import (REPO, alive, faulty, hpcgpu, rank_pids, small_spec, start, wait_until,
                                  write_spec)

pytestmark = pytest.mark.slow

STALL_S = 3
HUNG = 76


def run_hung(tmp_path: Path, entry: dict, **sections):
    spec = small_spec(entry=entry, watchdog={"stall_s": STALL_S}, **sections)
    return start(["run", "local", "--nproc", 2, "-f", write_spec(tmp_path / "job.yaml", spec)], tmp_path)


def the_report(run_dir: Path) -> tuple[str, dict]:
    (md,) = run_dir.glob("hang-*.md")
    return md.read_text(), json.loads(md.with_suffix(".json").read_text())


def by_rank(report: dict) -> dict[int, dict]:
    return {r["rank"]: r for r in report["ranks"]}


def main_frames(rank: dict) -> list[dict]:
    return next(t for t in rank["stacks"] if t["main"])["frames"]


def assert_all_ranks_gone(run_dir: Path) -> None:
    left = [pid for pids in rank_pids(run_dir).values() for pid in pids if alive(pid)]
    assert not left, f"ranks still running after the launcher exited: {left}"


def test_a_sigstopped_rank_ends_the_run_as_hung_and_the_report_names_it(tmp_path):
    run = run_hung(tmp_path, {"task": "hpcgpu.examples.mlp:make_task",
                              "task_args": {"n_samples": 256, "hidden": 32}}, train={"epochs": 200})
    ckpt = wait_until(lambda: list((tmp_path / "runs").glob("*/checkpoints/step_00000005")), 90, "step 5")[0]
    run_dir = ckpt.parent.parent
    pid = rank_pids(run_dir)[1][0]
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        done = run.wait(120)
    finally:
        os.kill(pid, signal.SIGCONT) if alive(pid) else None
    print(f"SIGSTOP -> launcher exit: {done.ended - stopped:.1f} s (stall_s {STALL_S})")
    assert done.rc == HUNG, done.text
    assert re.search(r"hpcgpu: hang: rank\(s\) 1 on \S+ made no progress for \d+ s \(stopped by a signal", done.stderr), \
        done.text
    text, report = the_report(run_dir)
    assert report["culprits"] == [1] and "**Stalled: rank(s) 1 on" in text, text
    ranks = by_rank(report)
    assert ranks[1]["state"] == "T" and ranks[1]["beats"] > 0
    # rank 0 waits inside a collective that rank 1 never entered: entered one more than completed
    flight = ranks[0]["flight"]
    assert flight["entered"] == flight["completed"] + 1 and flight["waiting_in"], flight
    assert f"which it has not entered" in report["why"]
    assert json.loads((run_dir / "result.json").read_text())["exit_code"] == HUNG
    status = hpcgpu(["status", run_dir.name], tmp_path)
    assert re.search(r"^state:\s+HUNG$", status.stdout, re.M), status.stdout
    assert re.search(r"^last_hang:\s+rank\(s\) 1 on \S+; .*hang-\d{8}-\d{6}\.md$", status.stdout, re.M), status.stdout
    assert "hung: no rank made progress" in done.stdout + done.stderr, done.text
    assert_all_ranks_gone(run_dir)


def test_a_rank_stuck_in_user_code_shows_that_line_of_the_script(tmp_path):
    script = REPO / "tests" / "helpers" / "hang_script.py"
    run = run_hung(tmp_path, {"script": str(script), "args": ["100"]})
    done = run.wait(120)
    assert done.rc == HUNG, done.text
    text, report = the_report(done.run_dir())
    assert report["culprits"] == [1], text
    ranks = by_rank(report)
    # rank 1 is behind in the collectives (its backward's all-reduce is the one rank 0 waits in)
    assert ranks[1]["flight"]["entered"] < ranks[0]["flight"]["entered"], text
    top = main_frames(ranks[1])[-1]
    assert (Path(top["file"]).name, top["code"]) == ("hang_script.py", "time.sleep(10**6)  # stuck in user code "
                                                                        "(the hang report shows this line)"), top
    assert "hang_script.py" in text and "time.sleep(10**6)" in text
    # the script beats only through dist.should_stop(), once a step: its step count is the step
    assert ranks[1]["step"] == 20 and ranks[1]["phase"] == "collective", ranks[1]
    assert "hang_script.py" in done.stderr, done.text  # the console shows the culprit's frames too


def test_a_stuck_data_loader_worker_is_found_and_shown(tmp_path):
    run = run_hung(tmp_path, faulty("loader", rank=1, step=3), train={"num_workers": 1})
    done = run.wait(120)
    assert done.rc == HUNG, done.text
    text, report = the_report(done.run_dir())
    assert report["culprits"] == [1], text
    rank1 = by_rank(report)[1]
    assert rank1["phase"] == "data", rank1
    assert rank1["children"] and all(c["state"] in "SR" for c in rank1["children"]), rank1
    assert "Child processes (data-loader workers)" in text
    assert any(f["function"] == "_get_data" or "dataloader" in f["file"] for f in main_frames(rank1)), text


def test_a_rank_spinning_in_a_loop_is_found_though_its_cpu_is_busy_restarted_and_the_run_finishes(tmp_path):
    # One run for two facts (a launch costs more than the rest of such a test): rank 1 spins in a tight
    # loop (full CPU, no progress) at its 8th step of the first attempt only; checkpoints every 5 steps.
    # The watchdog must find the spinning rank, and the hang then restarts the ranks under max_restarts.
    run = run_hung(tmp_path, faulty("spin", rank=1, step=8, attempt=0), train={"max_steps": 12},
                   distributed={"max_restarts": 1})
    done = run.wait(150)
    assert done.rc == 0, done.text
    # found though its CPU is busy: the first attempt's hang report names rank 1, stuck in the spin
    text, report = the_report(done.run_dir())
    assert report["culprits"] == [1], text
    assert main_frames(by_rank(report)[1])[-1]["function"] == "fault_now", text
    # restarted and finished
    assert re.search(r"hpcgpu: attempt 1 of 2 failed:\nhpcgpu: hang: rank\(s\) 1 on ", done.stderr), done.text
    assert "hpcgpu: restarting the ranks (attempt 2 of 2" in done.stderr, done.text
    log = (done.run_dir() / "logs" / "rank0.log").read_text()
    assert f"resuming from {done.run_dir() / 'checkpoints' / 'step_00000005'}: step 5," in log, log[-3000:]
    assert json.loads((done.run_dir() / "summary.json").read_text())["steps"] == 12
