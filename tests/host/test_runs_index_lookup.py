"""The run index ($HPCGPU_HOME/runs.jsonl) as `status`, `logs` and `cancel` read it: a damaged line
costs only itself, and a run is found by its id, a unique prefix of it, or its Slurm job id; a
prefix that fits several runs names them and asks for more."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.runs import RunRecord, create_run_dir, find_run, iter_index, register


@pytest.fixture
def env(tmp_path):
    return {"HPCGPU_HOME": str(tmp_path / "state")}


def add_run(base: Path, env, run_id, job_id=None):
    run_dir = create_run_dir(str(base), run_id)
    register(RunRecord(id=run_id, run_dir=str(run_dir), backend="local", created=1.0, job_id=job_id), environ=env)
    return run_dir


def append_line(tmp_path: Path, line: str) -> None:
    with open(tmp_path / "state" / "runs.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


# ---------------------------------------------------------------- reading the index


def test_a_damaged_line_between_runs_costs_only_itself(tmp_path, env):
    add_run(tmp_path / "runs", env, "first-1")
    append_line(tmp_path, '{"id": "torn", "run_dir": "/x", "backe')  # a write cut short
    add_run(tmp_path / "runs", env, "second-1")
    assert [r.id for r in iter_index(env)] == ["first-1", "second-1"]


def test_a_line_without_a_run_directory_is_skipped(tmp_path, env, monkeypatch):
    add_run(tmp_path / "runs", env, "first-1")
    append_line(tmp_path, '{"id": "no-dir-1", "backend": "local"}')
    append_line(tmp_path, '{"id": "empty-dir-1", "run_dir": ""}')
    second = add_run(tmp_path / "runs", env, "second-1")
    # not even when the current directory is a run directory: a line without one names no run
    monkeypatch.chdir(second)
    assert [r.id for r in iter_index(env)] == ["first-1", "second-1"]


@pytest.mark.parametrize("line", ["3", "[]", '"runs"', "null", "true"])
def test_a_line_that_is_json_but_not_a_record_is_skipped_not_a_crash(tmp_path, env, line):
    # e.g. what is left of two appends that overlapped on a network file system
    add_run(tmp_path / "runs", env, "first-1")
    append_line(tmp_path, line)
    add_run(tmp_path / "runs", env, "second-1")
    assert [r.id for r in iter_index(env)] == ["first-1", "second-1"]


# ---------------------------------------------------------------- finding a run


def test_an_unknown_run_points_to_hpcgpu_status(tmp_path, env):
    add_run(tmp_path / "runs", env, "r-1")
    with pytest.raises(UserError) as info:
        find_run("zzz", env)
    assert info.value.message == "no run matches 'zzz'"
    assert info.value.hint == "`hpcgpu status` lists recent runs"


def test_an_ambiguous_prefix_names_at_most_five_runs_sorted_and_asks_for_more(tmp_path, env):
    for suffix in ["g", "c", "a", "f", "b", "e", "d"]:
        add_run(tmp_path / "runs", env, f"train-{suffix}")
    with pytest.raises(UserError) as info:
        find_run("train-", env)
    assert info.value.message == ("'train-' matches several runs: "
                                  "train-a, train-b, train-c, train-d, train-e")
    assert info.value.hint == "give more of the run id"


def test_a_prefix_is_matched_at_the_start_of_the_id_only(tmp_path, env):
    add_run(tmp_path / "runs", env, "alpha-1")
    add_run(tmp_path / "runs", env, "beta-alpha-2")
    assert find_run("alpha", env).id == "alpha-1"
    with pytest.raises(UserError, match="no run matches 'pha'"):
        find_run("pha", env)
