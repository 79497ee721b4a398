"""The sweep index and lookups (hpcgpu/host/sweep_record.py): a sweep is named by its directory, its
id or a unique prefix; a prefix that also names other runs is refused rather than guessed."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.runs import RunRecord, create_run_dir, register
from hpcgpu.host.sweep_record import SweepRecord, find_sweep, register_sweep


def make_sweep(tmp_path, env, sweep_id: str) -> SweepRecord:
    sweep_dir = tmp_path / sweep_id
    sweep_dir.mkdir(mode=0o700)
    record = SweepRecord(id=sweep_id, sweep_dir=str(sweep_dir), backend="local", created=1.0,
                         tasks=[{"index": 0, "overrides": {"train.seed": 1}, "label": "seed=1",
                                 "run_id": f"{sweep_id}-t0", "run_dir": str(sweep_dir / "t0-seed=1")}])
    register_sweep(record, env)
    return record


def make_run(tmp_path, env, run_id: str) -> None:
    run_dir = create_run_dir(str(tmp_path), run_id)
    register(RunRecord(id=run_id, run_dir=str(run_dir), backend="local", created=1.0), env)


def test_a_sweep_by_directory_id_and_unique_prefix(tmp_path, monkeypatch):
    env = {"HPCGPU_HOME": str(tmp_path / "home")}
    monkeypatch.setenv("HPCGPU_HOME", env["HPCGPU_HOME"])
    make_sweep(tmp_path, env, "demo-20260101-000000-aaaa")
    make_run(tmp_path, env, "demo-20260101-000000-aaaa-t0")  # its own task: no ambiguity
    for ref in (str(tmp_path / "demo-20260101-000000-aaaa"), "demo-20260101-000000-aaaa", "demo-20260101-000000-a"):
        assert find_sweep(ref, env).id == "demo-20260101-000000-aaaa", ref
    assert find_sweep("other", env) is None
    assert find_sweep("demo-20260101-000000-aaaa-t0", env) is None  # a task's run id names the run


def test_a_prefix_shared_with_another_run_or_sweep_is_refused(tmp_path):
    env = {"HPCGPU_HOME": str(tmp_path / "home")}
    make_sweep(tmp_path, env, "demo-20260101-000000-aaaa")
    make_run(tmp_path, env, "demo-20260101-000000-bbbb")
    with pytest.raises(UserError, match="matches several sweeps or runs: demo-20260101-000000-aaaa, demo-20260101-000000-bbbb"):
        find_sweep("demo-2026", env)
    make_sweep(tmp_path, env, "demo-20260101-000000-aacc")
    with pytest.raises(UserError, match="matches several"):
        find_sweep("demo-20260101-000000-aa", env)
    assert find_sweep("demo-20260101-000000-aaaa", env).id == "demo-20260101-000000-aaaa"  # exact wins


def test_a_task_index_out_of_range_names_the_valid_ones(tmp_path):
    record = make_sweep(tmp_path, {"HPCGPU_HOME": str(tmp_path / "home")}, "s-1")
    with pytest.raises(UserError, match="sweep s-1 has no task 4") as info:
        record.task(4)
    assert info.value.hint == "its tasks are 0-0"
