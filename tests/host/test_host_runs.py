"""Run ids, the run index and finding a run by id, prefix, Slurm job id or path; where the index lives.
Every test passes an explicit environ (or monkeypatches HOME): the real ~ is never touched."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.runs import (RunRecord, create_run_dir, find_run, iter_index, new_run_id, register, state_home,
                              update_record)


# ---------------------------------------------------------------- ids


def test_new_run_id_format():
    now = 1_700_000_000.5
    run_id = new_run_id("train", now)
    m = re.fullmatch(r"train-(\d{8}-\d{6})-([0-9a-f]{4})", run_id)
    assert m, run_id
    assert m.group(1) == datetime.fromtimestamp(now).strftime("%Y%m%d-%H%M%S")


def test_new_run_ids_in_the_same_second_differ():
    ids = {new_run_id("train", 1_700_000_000.0) for _ in range(20)}
    # 4 hex digits: 20 draws collide rarely; a fixed or time-based suffix would give one id
    assert len(ids) >= 15


def test_new_run_ids_sort_by_time():
    assert new_run_id("a", 1_700_000_000) < new_run_id("a", 1_700_000_100) < new_run_id("a", 1_800_000_000)


# ---------------------------------------------------------------- where the index lives


def test_state_home_prefers_hpcgpu_home_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_home({"HPCGPU_HOME": "/x/h", "XDG_STATE_HOME": "/x/xdg"}) == Path("/x/h")
    assert state_home({"XDG_STATE_HOME": "/x/xdg"}) == Path("/x/xdg/hpcgpu")
    assert state_home({"HPCGPU_HOME": "", "XDG_STATE_HOME": "/x/xdg"}) == Path("/x/xdg/hpcgpu")
    assert state_home({}) == tmp_path / "home" / ".local" / "state" / "hpcgpu"
    assert state_home({"XDG_STATE_HOME": ""}) == tmp_path / "home" / ".local" / "state" / "hpcgpu"


def test_state_home_reads_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCGPU_HOME", str(tmp_path / "h"))
    assert state_home() == tmp_path / "h"


# ---------------------------------------------------------------- the index


@pytest.fixture
def env(tmp_path):
    return {"HPCGPU_HOME": str(tmp_path / "state")}


def add_run(tmp_path, env, run_id, job_id=None, backend="local"):
    run_dir = create_run_dir(str(tmp_path / "runs"), run_id)
    register(RunRecord(id=run_id, run_dir=str(run_dir), backend=backend, created=1.0, pid=123), environ=env)
    if job_id:
        update_record(run_dir, job_id=job_id)
    return run_dir


def test_register_writes_run_json_and_one_index_line(tmp_path, env):
    run_dir = add_run(tmp_path, env, "r-1")
    assert json.loads((run_dir / "run.json").read_text())["id"] == "r-1"
    lines = (tmp_path / "state" / "runs.jsonl").read_text().splitlines()
    assert [json.loads(ln)["id"] for ln in lines] == ["r-1"]
    assert [r.id for r in iter_index(env)] == ["r-1"]


def test_iter_index_is_oldest_first_and_reads_run_json(tmp_path, env):
    add_run(tmp_path, env, "r-1")
    add_run(tmp_path, env, "r-2", job_id="77")
    runs = list(iter_index(env))
    assert [r.id for r in runs] == ["r-1", "r-2"]
    assert runs[1].job_id == "77"  # updated in run.json after registration


def test_iter_index_skips_deleted_runs_and_garbage_lines(tmp_path, env):
    gone = add_run(tmp_path, env, "gone-1")
    add_run(tmp_path, env, "kept-1")
    with open(tmp_path / "state" / "runs.jsonl", "a") as f:
        f.write("not json\n")
    shutil.rmtree(gone)
    assert [r.id for r in iter_index(env)] == ["kept-1"]
    with pytest.raises(UserError, match="no run matches 'gone-1'"):
        find_run("gone-1", env)


def test_iter_index_without_an_index_is_empty(tmp_path):
    assert list(iter_index({"HPCGPU_HOME": str(tmp_path / "none")})) == []


def test_find_run_by_exact_id_beats_a_prefix_of_another(tmp_path, env):
    add_run(tmp_path, env, "run-1")
    add_run(tmp_path, env, "run-10")
    assert find_run("run-1", env).id == "run-1"
    assert find_run("run-10", env).id == "run-10"


def test_find_run_by_unique_prefix(tmp_path, env):
    add_run(tmp_path, env, "alpha-20250101-000000-aaaa")
    add_run(tmp_path, env, "beta-20250101-000000-bbbb")
    record = find_run("alp", env)
    assert record.id == "alpha-20250101-000000-aaaa" and record.backend == "local"


def test_find_run_by_slurm_job_id(tmp_path, env):
    add_run(tmp_path, env, "a-1", job_id="4242")
    add_run(tmp_path, env, "b-1", job_id="4243")
    assert find_run("4242", env).id == "a-1"
    assert find_run("4243", env).job_id == "4243"


def test_find_run_by_run_dir_path(tmp_path, env):
    run_dir = add_run(tmp_path, env, "p-1", job_id="9")
    record = find_run(str(run_dir), env)
    assert (record.id, record.run_dir, record.job_id) == ("p-1", str(run_dir), "9")
    # extra keys in run.json (cwd, restarts, nodelist) do not get in the way
    update_record(run_dir, cwd="/somewhere", restarts=2, nodelist="n[1-2]")
    assert find_run(str(run_dir), env).id == "p-1" and find_run("p-1", env).id == "p-1"


def test_an_ambiguous_prefix_lists_the_candidates(tmp_path, env):
    add_run(tmp_path, env, "train-20250101-000000-aaaa")
    add_run(tmp_path, env, "train-20250101-000000-bbbb")
    add_run(tmp_path, env, "other-1")
    with pytest.raises(UserError) as info:
        find_run("train-2025", env)
    msg = info.value.message
    assert "matches several runs" in msg
    assert "train-20250101-000000-aaaa" in msg and "train-20250101-000000-bbbb" in msg
    assert "other-1" not in msg
    assert "more of the run id" in info.value.hint


def test_an_unknown_run_is_a_user_error_with_a_hint(tmp_path, env):
    add_run(tmp_path, env, "r-1")
    with pytest.raises(UserError, match="no run matches 'zzz'") as info:
        find_run("zzz", env)
    assert "hpcgpu status" in info.value.hint
