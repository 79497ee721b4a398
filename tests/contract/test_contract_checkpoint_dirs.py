"""contract.checkpoints, read by the host before `--resume` (stdlib only, no torch): which directories
count as checkpoints and in what order, which were set aside, and the reasons the host prints when no
checkpoint can be used."""

from __future__ import annotations

import json
from pathlib import Path

from hpcgpu.contract.checkpoints import (
    CheckpointError,
    list_checkpoints,
    progress_lost,
    set_aside,
    step_dir_name,
    why_broken,
)


def committed(ckpt: Path, step: int, payload: bytes = b"abc") -> Path:
    d = ckpt / f"step_{step:08d}"
    d.mkdir(parents=True)
    (d / "state.pt").write_bytes(payload)
    (d / "manifest.json").write_text(json.dumps(
        {"format": 1, "step": step, "files": {"state.pt": {"bytes": len(payload), "sha256": "0" * 64}}}))
    return d


def test_step_dir_names_are_zero_padded_to_eight_digits():
    assert step_dir_name(100) == "step_00000100"
    assert step_dir_name(123456789) == "step_123456789"


def test_a_missing_checkpoint_dir_has_no_checkpoints(tmp_path):
    assert list_checkpoints(tmp_path / "nope") == []
    assert set_aside(tmp_path / "nope") == []
    assert progress_lost(tmp_path / "nope") is None


def test_checkpoints_are_listed_newest_step_first_by_number(tmp_path):
    for step in (9, 100, 20, 123456789):
        (tmp_path / f"step_{step:08d}").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [123456789, 100, 20, 9]
    assert list_checkpoints(tmp_path)[0][1] == tmp_path / "step_123456789"


def test_only_committed_step_directories_are_listed(tmp_path):
    (tmp_path / "step_00000001").mkdir()
    (tmp_path / "step_00000002").write_text("a file, not a checkpoint directory")
    (tmp_path / ".step_00000003.tmp-123").mkdir()  # a save in progress
    (tmp_path / "step_00000004.corrupt").mkdir()  # set aside
    (tmp_path / "step_5").mkdir()  # not a name hpcgpu writes
    assert list_checkpoints(tmp_path) == [(1, tmp_path / "step_00000001")]


def test_set_aside_lists_only_corrupt_directories_sorted(tmp_path):
    (tmp_path / "step_00000002.corrupt").mkdir()
    (tmp_path / "step_00000001.corrupt").mkdir()
    (tmp_path / "notes.corrupt").write_text("a file")
    (tmp_path / "step_00000003").mkdir()
    assert set_aside(tmp_path) == [tmp_path / "step_00000001.corrupt", tmp_path / "step_00000002.corrupt"]


def test_why_broken_drops_the_path_prefix_only_when_it_is_there(tmp_path):
    p = tmp_path / "step_00000001"
    assert why_broken(CheckpointError(f"{p}: state.pt is missing"), p) == "state.pt is missing"
    assert why_broken(CheckpointError("disk on fire"), p) == "disk on fire"
    # another checkpoint's path is not this one's prefix
    other = tmp_path / "step_00000002"
    assert why_broken(CheckpointError(f"{other}: x"), p) == f"{other}: x"


def test_progress_is_not_lost_while_one_checkpoint_has_its_files(tmp_path):
    committed(tmp_path, 1)
    broken = committed(tmp_path, 2)
    (broken / "state.pt").write_bytes(b"a")  # truncated
    assert progress_lost(tmp_path) is None


def test_progress_lost_names_each_checkpoint_and_its_reason_without_the_path(tmp_path):
    truncated = committed(tmp_path, 2)
    (truncated / "state.pt").write_bytes(b"a")
    (tmp_path / "step_00000003").mkdir()  # no manifest: the save never finished
    (tmp_path / "step_00000001.corrupt").mkdir()
    lines = progress_lost(tmp_path)
    assert lines[0] == "step_00000003: no manifest.json (incomplete: the save did not finish)"
    assert lines[1] == "step_00000002: state.pt has 1 bytes, the manifest says 3 (truncated)"
    assert lines[2] == "step_00000001.corrupt: set aside by an earlier resume (failed verification)"
    assert len(lines) == 3
