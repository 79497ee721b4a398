"""The run index at scale (hpcgpu/host/runs.py): `status` reads only the newest runs' files and
`status RUN` only the matching run's, so both cost the same with 10 runs or 10,000 (benchmark tier 1
measures it)."""

from __future__ import annotations

import json

import pytest

import hpcgpu.host.runs as runs
from hpcgpu.contract.errors import UserError
from hpcgpu.host.runs import find_run, recent_runs


@pytest.fixture
def index(tmp_path, monkeypatch):
    """1,000 registered runs (run i has job id 500+i); counts the run.json files read."""
    home = tmp_path / "home"
    home.mkdir()
    lines = []
    for i in range(1000):
        run_dir = tmp_path / "runs" / f"r-20260101-{i:06d}-abcd"
        run_dir.mkdir(parents=True)
        record = {"id": run_dir.name, "run_dir": str(run_dir), "backend": "slurm", "created": float(i)}
        lines.append(json.dumps(record))
        (run_dir / "run.json").write_text(json.dumps({**record, "job_id": str(500 + i)}))
    (home / "runs.jsonl").write_text("\n".join(lines) + "\n{damaged\n")
    monkeypatch.setenv("HPCGPU_HOME", str(home))
    reads = []
    real = runs.load_record
    monkeypatch.setattr(runs, "load_record", lambda entry: reads.append(entry["id"]) or real(entry))
    return tmp_path, reads


def test_the_list_reads_only_the_newest_runs(index):
    tmp_path, reads = index
    got = recent_runs(10)
    assert [r.id for r in got] == [f"r-20260101-{i:06d}-abcd" for i in range(990, 1000)]  # oldest first
    assert len(reads) == 10


def test_the_list_skips_runs_whose_directory_is_gone_and_reads_on(index):
    tmp_path, reads = index
    (tmp_path / "runs" / "r-20260101-000999-abcd" / "run.json").unlink()
    got = recent_runs(3)
    assert [r.id[-11:-5] for r in got] == ["000996", "000997", "000998"]
    assert len(reads) == 4


def test_a_run_by_id_or_prefix_reads_only_the_matching_runs(index):
    _, reads = index
    assert find_run("r-20260101-000500-abcd").job_id == "1000"
    assert reads == ["r-20260101-000500-abcd"]
    reads.clear()
    assert find_run("r-20260101-000123").id == "r-20260101-000123-abcd"  # a unique prefix
    assert reads == ["r-20260101-000123-abcd"]


def test_an_ambiguous_prefix_stops_reading_after_five_runs(index):
    _, reads = index
    with pytest.raises(UserError, match="matches several runs"):
        find_run("r-2026")
    assert len(reads) <= 6


def test_a_job_id_is_found_in_run_json(index):
    _, reads = index
    assert find_run("900").id == "r-20260101-000400-abcd"
    with pytest.raises(UserError, match="no run matches '99999'"):
        find_run("99999")
