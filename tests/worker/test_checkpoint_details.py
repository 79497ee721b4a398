"""worker.checkpoint, one rule at a time: the hashing writer's byte count and digest, digests of files
written by others, the manifest, replacing a step, failed saves leaving nothing behind, resolving a
named checkpoint, setting broken ones aside, the all-lost warning, loading refusals, pruning."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
import torch

from hpcgpu.worker import checkpoint as ckpt


def quiet(_msg: str) -> None:
    pass


# --- _HashingWriter / digest_file ------------------------------------------------------------------

def test_the_hashing_writer_counts_bytes_not_items_of_a_memoryview():
    sink = io.BytesIO()
    w = ckpt._HashingWriter(sink)
    floats = memoryview(array("f", [1.0, 2.0, 3.0, 4.0]))  # 4 items, 16 bytes
    assert w.write(floats) == 16
    assert w.write(b"abc") == 3
    assert w.size == 19 == len(sink.getvalue())
    assert w.sha.hexdigest() == hashlib.sha256(sink.getvalue()).hexdigest()


def test_the_hashing_writer_hashes_large_chunks_exactly_too():
    sink = io.BytesIO()
    w = ckpt._HashingWriter(sink)
    big = os.urandom(ckpt._OVERLAP_MIN + 5)
    assert w.write(memoryview(big)) == len(big)
    assert w.write(big) == len(big)
    w.flush()
    assert w.size == 2 * len(big)
    assert w.sha.hexdigest() == hashlib.sha256(big + big).hexdigest()


def test_digest_of_a_file_larger_than_one_read_chunk(tmp_path):
    data = os.urandom((1 << 22) + 1000)  # more than one 4 MiB chunk
    f = tmp_path / "shard.distcp"
    f.write_bytes(data)
    assert ckpt.digest_file(f) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_digest_of_an_empty_file(tmp_path):
    f = tmp_path / "empty"
    f.write_bytes(b"")
    assert ckpt.digest_file(f) == {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def test_write_torch_creates_an_owner_only_file_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        ckpt.write_torch({"w": torch.ones(1)}, tmp_path / "x.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "x.pt").st_mode) == 0o600


def test_write_torch_returns_the_files_manifest_entry(tmp_path):
    entry = ckpt.write_torch({"w": torch.arange(10)}, tmp_path / "x.pt")
    data = (tmp_path / "x.pt").read_bytes()
    assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["w"], torch.arange(10))


# --- begin / commit / save_state -------------------------------------------------------------------

def test_begin_starts_over_a_leftover_temporary_of_this_process(tmp_path):
    tmp = ckpt.begin(tmp_path, 3)
    assert tmp == tmp_path / f".step_00000003.tmp-{os.getpid()}"
    (tmp / "stale").write_text("from an earlier try")
    again = ckpt.begin(tmp_path, 3)
    assert again == tmp and list(again.iterdir()) == []


def test_the_vanished_directory_warning_is_flushed_at_once(tmp_path, monkeypatch):
    # a rank killed right after it saved must still leave the warning in its log (stdout is a pipe)
    ckpt_dir = tmp_path / "ckpt"
    ckpt.begin(ckpt_dir, 1)
    shutil.rmtree(ckpt_dir)  # deleted mid-run
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8", line_buffering=False))
    ckpt.begin(ckpt_dir, 2)
    text = raw.getvalue().decode()  # what reached the pipe, without flushing the wrapper
    assert text.startswith(f"hpcgpu: warning: the checkpoint directory {ckpt_dir} vanished during the run")
    assert text.endswith("making it again, owner-only, and saving there\n")


def test_the_manifest_records_format_step_time_files_and_meta_sorted(tmp_path):
    path = ckpt.save_state(tmp_path, 42, {"w": torch.ones(1)}, {"epoch": 3})
    text = (path / ckpt.MANIFEST).read_text()
    manifest = json.loads(text)
    assert manifest["format"] == 1 and manifest["step"] == 42 and manifest["kind"] == "state"
    assert manifest["epoch"] == 3 and set(manifest["files"]) == {"state.pt"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", manifest["time"])
    keys = re.findall(r'^ "(\w+)":', text, flags=re.M)  # one top-level key per line, sorted
    assert keys == sorted(manifest) and len(keys) == len(manifest)


def test_save_without_meta_is_kind_state(tmp_path):
    path = ckpt.save_state(tmp_path, 1, {"w": torch.ones(1)})
    assert json.loads((path / ckpt.MANIFEST).read_text())["kind"] == "state"


def test_saving_a_step_again_leaves_no_old_copy_behind(tmp_path):
    ckpt.save_state(tmp_path, 5, {"v": 1})
    ckpt.save_state(tmp_path, 5, {"v": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000005"]
    assert ckpt.load_state(tmp_path / "step_00000005")["v"] == 2


def test_a_save_that_fails_leaves_no_temporary_directory(tmp_path):
    with pytest.raises(Exception):
        ckpt.save_state(tmp_path, 2, {"f": lambda: 0})  # not picklable: torch.save fails midway
    assert list(tmp_path.iterdir()) == []


# --- resolve_resume --------------------------------------------------------------------------------

def test_a_named_checkpoint_relative_to_the_working_directory_is_used_as_given(tmp_path, monkeypatch):
    other = tmp_path / "old_run"
    ckpt.save_state(other, 4, {"v": "old"})
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    got = ckpt.resolve_resume("old_run/step_00000004", ckpt_dir, quiet)
    assert ckpt.load_state(got)["v"] == "old"


def test_an_existing_relative_path_wins_over_the_same_name_in_the_checkpoint_dir(tmp_path, monkeypatch):
    here = tmp_path / "here"
    ckpt.save_state(here, 4, {"v": "cwd"})
    ckpt_dir = tmp_path / "ckpt"
    ckpt.save_state(ckpt_dir, 4, {"v": "ckpt"})
    monkeypatch.chdir(here)
    got = ckpt.resolve_resume("step_00000004", ckpt_dir, quiet)
    assert ckpt.load_state(got)["v"] == "cwd"


def test_a_named_checkpoint_that_is_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="no manifest.json"):
        ckpt.resolve_resume("step_00000009", tmp_path / "ckpt", quiet)


# --- quarantine / all_lost_warning -----------------------------------------------------------------

def test_quarantine_replaces_an_earlier_corrupt_copy_of_the_same_step(tmp_path):
    earlier = tmp_path / "step_00000007.corrupt"
    earlier.mkdir()
    (earlier / "state.pt").write_bytes(b"first broken copy")
    path = ckpt.save_state(tmp_path, 7, {"v": 7})
    moved = ckpt.quarantine(path)
    assert moved == earlier and not path.exists()
    assert sorted(p.name for p in moved.iterdir()) == ["manifest.json", "state.pt"]
    assert ckpt.load_state(moved)["v"] == 7


def test_the_all_lost_warning_lists_every_checkpoint_set_aside(tmp_path):
    text = ckpt.all_lost_warning(tmp_path, [
        ckpt.Skipped(tmp_path / "step_00000064.corrupt", "state.pt has 1 bytes, the manifest says 2 (truncated)"),
        ckpt.Skipped(tmp_path / "step_00000060.corrupt", "state.pt does not match its checksum (corrupt)"),
    ])
    lines = text.split("\n")
    assert len(lines) == 7 and lines[0] == lines[-1]
    assert lines[0] == "hpcgpu: " + "!" * 78  # the banner of docs/checkpointing.md
    assert lines[1] == f"hpcgpu: WARNING: 2 checkpoints found in {tmp_path}; none could be used:"
    assert lines[2] == "hpcgpu:   step_00000064.corrupt: state.pt has 1 bytes, the manifest says 2 (truncated)"
    assert lines[3] == "hpcgpu:   step_00000060.corrupt: state.pt does not match its checksum (corrupt)"
    assert "set aside as <name>.corrupt" in lines[4] and "delete them to free the space" in lines[4]
    assert lines[5] == "hpcgpu: WARNING: starting from step 0: all progress of this run is lost"


def test_the_all_lost_warning_for_one_checkpoint_says_checkpoint(tmp_path):
    text = ckpt.all_lost_warning(tmp_path, [ckpt.Skipped(tmp_path / "step_00000001.corrupt", "x")])
    assert f"hpcgpu: WARNING: 1 checkpoint found in {tmp_path}; none could be used:" in text.split("\n")


# --- loading ---------------------------------------------------------------------------------------

class NotATensor:
    """A class a checkpoint must never smuggle in."""


def test_a_pickled_object_is_refused_with_the_reason_and_the_way_out(tmp_path):
    f = tmp_path / "evil.pt"
    torch.save({"x": NotATensor()}, f)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_file(f)
    msg = str(info.value)
    assert "could run code when loaded" in msg
    assert "hpcgpu checkpoints hold only tensors and plain values (dict, list, int, float, str)" in msg
    assert "If you trust the file, load it yourself with torch.load(path, weights_only=False)." in msg


def test_a_legacy_format_file_is_read_without_mmap(tmp_path):
    f = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, f, _use_new_zipfile_serialization=False)
    assert torch.equal(ckpt.load_file(f)["w"], torch.ones(3))


def test_a_legacy_format_file_with_a_pickled_object_is_still_refused(tmp_path):
    # the fallback for files mmap cannot read must keep weights_only
    f = tmp_path / "legacy_evil.pt"
    torch.save({"x": NotATensor()}, f, _use_new_zipfile_serialization=False)
    with pytest.raises(ckpt.CheckpointError, match="refusing to load"):
        ckpt.load_file(f)


def test_garbage_names_the_file_and_the_first_line_of_the_reason(tmp_path):
    f = tmp_path / "junk.pt"
    f.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_file(f)
    msg = str(info.value)
    assert msg.startswith(f"{f}: not a loadable torch checkpoint (") and msg.endswith(")")
    assert "\n" not in msg and len(msg) > len(f"{f}: not a loadable torch checkpoint ()")


def test_is_sharded_means_a_shards_directory(tmp_path):
    assert not ckpt.is_sharded(tmp_path)
    (tmp_path / "shards").write_text("a file is not the shards directory")
    assert not ckpt.is_sharded(tmp_path)
    other = tmp_path / "fsdp"
    (other / "shards").mkdir(parents=True)
    assert ckpt.is_sharded(str(other))


# --- prune -----------------------------------------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_prune_keeps_the_newest_and_the_checkpoint_being_resumed(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_state(tmp_path, step, {"v": step})
    removed = ckpt.prune(tmp_path, keep_last=2, keep=tmp_path / "step_00000001")
    assert sorted(p.name for p in removed) == ["step_00000002"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 3, 1]


def test_prune_removes_only_leftovers_of_dead_writers(tmp_path):
    ckpt.save_state(tmp_path, 1, {"v": 1})
    dead = dead_pid()
    dead_tmp = tmp_path / f".step_00000002.tmp-{dead}"
    dead_old = tmp_path / f".step_00000001.old-{dead}"
    mine = tmp_path / f".step_00000003.tmp-{os.getpid()}"
    alive = tmp_path / f".step_00000004.tmp-{os.getppid()}"
    odd = tmp_path / ".step_00000005.tmp-abc"
    for d in (dead_tmp, dead_old, mine, alive, odd):
        d.mkdir()
    removed = ckpt.prune(tmp_path, keep_last=5)
    assert sorted(removed) == sorted([dead_tmp, dead_old])
    assert not dead_tmp.exists() and not dead_old.exists()
    assert mine.exists() and alive.exists() and odd.exists()
    assert (tmp_path / "step_00000001").exists()


# --- removals that fail (NFS: a file still open or mapped elsewhere leaves .nfsXXXX behind) --------

def busy_rmtree(path, ignore_errors=False, onerror=None, **kwargs):
    """shutil.rmtree on a directory that cannot be removed (EBUSY), honouring ignore_errors as shutil does."""
    if ignore_errors:
        return
    raise OSError(errno.EBUSY, "Device or resource busy", str(path))


def test_replacing_a_step_succeeds_even_if_the_old_copy_cannot_be_removed(tmp_path, monkeypatch):
    ckpt.save_state(tmp_path, 5, {"v": 1})
    monkeypatch.setattr(ckpt.shutil, "rmtree", busy_rmtree)
    path = ckpt.save_state(tmp_path, 5, {"v": 2})
    monkeypatch.undo()
    assert ckpt.load_state(path)["v"] == 2


def test_a_failed_save_reports_its_own_error_even_if_the_cleanup_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt.shutil, "rmtree", busy_rmtree)
    with pytest.raises(Exception) as info:
        ckpt.save_state(tmp_path, 2, {"f": lambda: 0})
    assert not (isinstance(info.value, OSError) and info.value.errno == errno.EBUSY)


def test_prune_goes_on_when_a_checkpoint_cannot_be_removed(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        ckpt.save_state(tmp_path, step, {"v": step})
    dead = tmp_path / f".step_00000009.tmp-{dead_pid()}"
    dead.mkdir()
    monkeypatch.setattr(ckpt.shutil, "rmtree", busy_rmtree)
    ckpt.prune(tmp_path, keep_last=1)  # a training step must not fail because an old checkpoint is busy
    monkeypatch.undo()
    assert ckpt.list_checkpoints(tmp_path)[0][0] == 3


def torch_reason(path) -> str:
    """The first line of what torch.load itself says about path."""
    with pytest.raises(Exception) as info:
        torch.load(path, weights_only=True)
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("name, data", [
    ("zip_garbage.pt", b"PK\x03\x04 not really a zip" * 10),  # torch: a RuntimeError (one long line)
    ("pickle_garbage.pt", b"\x00garbage" * 100),  # torch: an UnpicklingError without a global (several lines)
])
def test_an_unloadable_file_gives_torchs_first_line_cut_to_200_characters(tmp_path, name, data):
    f = tmp_path / name
    f.write_bytes(data)
    reason = torch_reason(f)
    assert len(reason) > 200  # long enough to be cut
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_file(f)
    assert str(info.value) == f"{f}: not a loadable torch checkpoint ({reason[:200]})"


@pytest.mark.parametrize("zipfile", [True, False])
def test_pickled_objects_are_refused_even_when_the_environment_lifts_torchs_default(tmp_path, monkeypatch, zipfile):
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (set for someone's own code) turns torch.load's default to
    # weights_only=False; hpcgpu's loads ask for weights_only=True themselves, in both formats
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    f = tmp_path / "evil.pt"
    torch.save({"x": NotATensor()}, f, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(ckpt.CheckpointError, match="refusing to load"):
        ckpt.load_file(f)
