"""A new run directory (docs/architecture.md, "Run directory"): private to the user (0700), with
`logs/`, `checkpoints/`, `tb/`, `exit/` and `rdzv/` (where the head node publishes its rendezvous
port) ready before anything starts; run.json and the index lines are single JSON objects with
sorted keys."""

from __future__ import annotations

import json
import stat

from hpcgpu.host.runs import RunRecord, create_run_dir, register


def test_a_new_run_directory_has_every_subdirectory_private_to_the_user(tmp_path):
    root = create_run_dir(str(tmp_path / "runs"), "demo-1")
    assert root == tmp_path / "runs" / "demo-1"
    assert sorted(p.name for p in root.iterdir()) == ["checkpoints", "exit", "logs", "rdzv", "tb"]
    for d in [root, *root.iterdir()]:
        assert d.is_dir() and stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_run_json_and_the_index_line_have_sorted_keys(tmp_path):
    root = create_run_dir(str(tmp_path / "runs"), "demo-1")
    record = RunRecord(id="demo-1", run_dir=str(root), backend="local", created=1.5, pid=42, host="node1")
    line = record.to_json()
    assert list(json.loads(line)) == ["backend", "created", "host", "id", "job_id", "nodes", "pid", "pid_start",
                                      "run_dir"]
    assert "\n" not in line
    register(record, environ={"HPCGPU_HOME": str(tmp_path / "state")})
    index = (tmp_path / "state" / "runs.jsonl").read_text()
    assert index == line + "\n"
