"""Load: ten `hpcgpu run local` jobs started at once on one machine all get their own ports and finish.

Each job is one CPU rank of a script that records the rendezvous port it was given and then waits
until all ten have recorded theirs, so the ten runs provably overlap: two runs that shared a
port (or a store) would fail or hang here. (Twenty Slurm submissions in a burst belong to the
Slurm backend's suite: tests/backends/slurm/test_submit_errors.py.)
"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers.relkit import base_env, start

pytestmark = pytest.mark.slow

JOBS = 10

SCRIPT = """
import json, os, sys, time
from hpcgpu import dist
dist.init()
meeting, jobs = sys.argv[1], int(sys.argv[2])
run_dir = os.environ["HPCGPU_RUN_DIR"]
with open(os.path.join(meeting, os.path.basename(run_dir) + ".json"), "w") as f:
    json.dump({"master": os.environ["MASTER_ADDR"] + ":" + os.environ["MASTER_PORT"], "pid": os.getpid()}, f)
deadline = time.time() + 240
while len(os.listdir(meeting)) < jobs and time.time() < deadline:
    time.sleep(0.2)
dist.barrier()
print("met", len(os.listdir(meeting)), flush=True)
"""


def test_ten_local_runs_started_together_get_distinct_ports_and_all_finish(tmp_path):
    (tmp_path / "meet.py").write_text(SCRIPT)
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    env = base_env(tmp_path / "home")
    t0 = time.monotonic()
    runs = [start(["run", "local", "--nproc", 1, "--name", f"load{i}", "--", "meet.py", meeting, JOBS],
                  tmp_path, env, tag=f"job{i}") for i in range(JOBS)]
    done = [r.wait(300) for r in runs]
    took = time.monotonic() - t0
    assert [d.rc for d in done] == [0] * JOBS, "\n\n".join(d.text for d in done if d.rc)
    assert all("met 10" in d.stdout for d in done), "\n\n".join(d.text for d in done)
    seen = [json.loads(p.read_text())["master"] for p in meeting.iterdir()]
    assert len(seen) == JOBS and len(set(seen)) == JOBS, seen
    run_dirs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(run_dirs) == JOBS
    index = (tmp_path / "home" / "runs.jsonl").read_text().splitlines()
    assert len({json.loads(line)["id"] for line in index}) == JOBS
    print(f"{JOBS} concurrent runs finished in {took:.1f} s")
