"""Checkpoints on disk: atomic step directories, verification, fallback, pruning, pickle refusal."""

import json
import pickle
import random

import numpy as np
import pytest
import torch

from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker.saver import Checkpointer
from hpcgpu.worker.state import rng_state, set_rng_state, snapshot, spec_changes, spec_fingerprint


class NotATensor:
    """A class a checkpoint must never smuggle in."""


def state(step: int = 1) -> dict:
    return {"model": {"w": torch.full((4, 4), float(step))}, "step": step, "name": "x", "lr": [1e-3]}


def quiet(_msg: str) -> None:
    pass


def test_save_creates_step_dir_with_manifest_and_no_leftovers(tmp_path):
    path = ckpt.save_state(tmp_path, 100, state(100), {"epoch": 2})
    assert path == tmp_path / "step_00000100"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000100"]  # no temporary names left
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    assert manifest["step"] == 100 and manifest["epoch"] == 2 and set(manifest["files"]) == {ckpt.STATE}
    assert manifest["files"][ckpt.STATE]["bytes"] == (path / ckpt.STATE).stat().st_size
    assert ckpt.verify(path)["step"] == 100
    assert torch.equal(ckpt.load_state(path)["model"]["w"], torch.full((4, 4), 100.0))


def test_large_tensors_hashed_beside_the_write_match_the_bytes_on_disk(tmp_path):
    # tensors above _OVERLAP_MIN are hashed in a helper thread while written; the manifest must still
    # describe exactly the file (and a stale chunk or a race would show up as a mismatch)
    big = {"model": {f"w{i}": torch.randn(512, 1024) for i in range(3)}, "small": torch.ones(3), "step": 7}
    assert big["model"]["w0"].nbytes >= ckpt._OVERLAP_MIN
    path = ckpt.save_state(tmp_path, 7, big)
    entry = json.loads((path / ckpt.MANIFEST).read_text())["files"][ckpt.STATE]
    assert entry == ckpt.digest_file(path / ckpt.STATE)
    assert entry["bytes"] == (path / ckpt.STATE).stat().st_size
    loaded = ckpt.load_state(path)
    assert all(torch.equal(loaded["model"][k], v) for k, v in big["model"].items())


def test_saving_the_same_step_again_replaces_it(tmp_path):
    ckpt.save_state(tmp_path, 5, state(1))
    ckpt.save_state(tmp_path, 5, state(2))
    assert ckpt.load_state(tmp_path / "step_00000005")["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000005"]


def test_list_sorts_newest_first_and_ignores_temporaries(tmp_path):
    for step in (2, 10, 7):
        ckpt.save_state(tmp_path, step, state(step))
    (tmp_path / ".step_00000011.tmp-1").mkdir()
    (tmp_path / "step_00000012.corrupt").mkdir()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [10, 7, 2]
    assert ckpt.list_checkpoints(tmp_path / "missing") == []


def test_truncated_newest_is_reported_and_the_previous_one_used(tmp_path):
    ckpt.save_state(tmp_path, 10, state(10))
    newest = ckpt.save_state(tmp_path, 20, state(20))
    data = (newest / ckpt.STATE).read_bytes()
    (newest / ckpt.STATE).write_bytes(data[: len(data) // 2])
    reports, skipped = [], []
    assert ckpt.latest_valid(tmp_path, reports.append, skipped) == tmp_path / "step_00000010"
    assert [s.path for s in skipped] == [newest] and "truncated" in skipped[0].reason
    assert "step_00000020" in reports[0] and "truncated" in reports[0]


def test_resume_with_every_checkpoint_broken_warns_loudly_that_all_progress_is_lost(tmp_path, capsys):
    from hpcgpu.contract.specview import SpecView
    from hpcgpu.worker.context import WorkerContext, agree_resume
    from hpcgpu.worker.rank import RankInfo

    truncated = ckpt.save_state(tmp_path, 10, state(10))
    data = (truncated / ckpt.STATE).read_bytes()
    (truncated / ckpt.STATE).write_bytes(data[: len(data) // 2])
    flipped = ckpt.save_state(tmp_path, 20, state(20))
    data = bytearray((flipped / ckpt.STATE).read_bytes())
    data[-10] ^= 0xFF
    (flipped / ckpt.STATE).write_bytes(bytes(data))
    ctx = WorkerContext(info=RankInfo(0, 0, 1, 1, 0, "single"), spec=SpecView({}), run_dir=tmp_path, ckpt_dir=tmp_path)
    assert ckpt.resolve_resume("auto", tmp_path, quiet, ctx.skipped) is None

    assert agree_resume(ctx) is None and ctx.lost_all
    out = capsys.readouterr().out
    assert f"2 checkpoints found in {tmp_path}; none could be used" in out
    assert "step_00000020.corrupt: state.pt does not match its checksum (corrupt)" in out
    assert "step_00000010.corrupt: state.pt has" in out and "(truncated)" in out
    assert "starting from step 0: all progress of this run is lost" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000010.corrupt", "step_00000020.corrupt"]


def test_a_broken_newest_with_a_good_previous_one_is_no_loss(tmp_path, capsys):
    from hpcgpu.contract.specview import SpecView
    from hpcgpu.worker.context import WorkerContext, agree_resume
    from hpcgpu.worker.rank import RankInfo

    good = ckpt.save_state(tmp_path, 10, state(10))
    broken = ckpt.save_state(tmp_path, 20, state(20))
    (broken / ckpt.MANIFEST).unlink()
    ctx = WorkerContext(info=RankInfo(0, 0, 1, 1, 0, "single"), spec=SpecView({}), run_dir=tmp_path, ckpt_dir=tmp_path)
    ctx.resume_from = ckpt.resolve_resume("auto", tmp_path, quiet, ctx.skipped)
    assert agree_resume(ctx) == good and not ctx.lost_all
    out = capsys.readouterr().out
    assert "moved broken checkpoint aside" in out and "progress" not in out


def test_corrupt_bytes_of_the_same_size_fail_the_checksum(tmp_path):
    ckpt.save_state(tmp_path, 1, state(1))
    path = ckpt.save_state(tmp_path, 2, state(2))
    f = path / ckpt.STATE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.verify(path)
    assert ckpt.latest_valid(tmp_path, quiet) == tmp_path / "step_00000001"


def test_missing_manifest_means_incomplete(tmp_path):
    path = ckpt.save_state(tmp_path, 3, state(3))
    (path / ckpt.MANIFEST).unlink()
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.verify(path)
    assert ckpt.latest_valid(tmp_path, quiet) is None


def test_resolve_resume_settings(tmp_path):
    assert ckpt.resolve_resume("auto", tmp_path / "none", quiet) is None  # a first run is normal
    ckpt.save_state(tmp_path, 4, state(4))
    ckpt.save_state(tmp_path, 8, state(8))
    assert ckpt.resolve_resume("auto", tmp_path, quiet) == tmp_path / "step_00000008"
    assert ckpt.resolve_resume("never", tmp_path, quiet) is None
    assert ckpt.resolve_resume("step_00000004", tmp_path, quiet) == tmp_path / "step_00000004"
    assert ckpt.resolve_resume(str(tmp_path / "step_00000004"), tmp_path, quiet) == tmp_path / "step_00000004"
    (tmp_path / "step_00000004" / ckpt.STATE).write_bytes(b"broken")
    with pytest.raises(ckpt.CheckpointError):  # a named checkpoint that is broken is an error
        ckpt.resolve_resume("step_00000004", tmp_path, quiet)


def test_torch_save_of_a_python_object_is_refused(tmp_path):
    f = tmp_path / "evil.pt"
    torch.save({"x": NotATensor()}, f)
    with pytest.raises(ckpt.CheckpointError, match=r"pickled Python object .*NotATensor"):
        ckpt.load_file(f)


def test_hand_made_pickle_with_a_global_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"cbuiltins\nexec\n(S'open({str(marker)!r}, \"w\").close()'\ntR.".encode()
    pickle.loads(b"cbuiltins\nlen\n(S'abc'\ntR.")  # the opcodes are real: plain pickle would run them
    f = tmp_path / "evil.pt"
    f.write_bytes(payload)
    with pytest.raises(ckpt.CheckpointError, match="refusing to load"):
        ckpt.load_file(f)
    assert not marker.exists()


def test_checkpoint_dir_with_a_pickle_payload_and_matching_manifest_is_refused(tmp_path):
    # An attacker can rewrite the manifest too: the checksum is no defence, weights_only is.
    path = ckpt.save_state(tmp_path, 1, state(1))
    torch.save({"x": NotATensor()}, path / ckpt.STATE)
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    manifest["files"][ckpt.STATE] = ckpt.digest_file(path / ckpt.STATE)
    (path / ckpt.MANIFEST).write_text(json.dumps(manifest))
    assert ckpt.latest_valid(tmp_path, quiet) == path
    with pytest.raises(ckpt.CheckpointError, match="refusing to load"):
        ckpt.load_state(path)


def test_garbage_file_is_reported_not_crashed_on(tmp_path):
    f = tmp_path / "junk.pt"
    f.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ckpt.CheckpointError, match="not a loadable"):
        ckpt.load_file(f)


def test_prune_keeps_the_newest_and_removes_dead_writers_leftovers(tmp_path):
    for step in range(1, 6):
        ckpt.save_state(tmp_path, step, state(step))
    dead = tmp_path / ".step_00000006.tmp-999999999"
    dead.mkdir()
    ckpt.prune(tmp_path, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5, 4]
    assert not dead.exists()


def test_quarantine_takes_a_broken_checkpoint_out_of_the_way(tmp_path):
    path = ckpt.save_state(tmp_path, 7, state(7))
    moved = ckpt.quarantine(path)
    assert moved.name == "step_00000007.corrupt" and ckpt.list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("async_save", [False, True])
def test_checkpointer_keeps_keep_last_and_waits_for_writes(tmp_path, async_save):
    saver = Checkpointer(tmp_path, keep_last=2, async_save=async_save, report=quiet)
    live = {"w": torch.zeros(3)}
    for step in (1, 2, 3):
        live["w"].fill_(step)
        saver.save(step, {"model": live, "step": step})
        live["w"].fill_(-1)  # the loop goes on changing tensors: the saved copy must not change
    saver.wait()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 2]
    assert torch.equal(ckpt.load_state(saver.last)["model"]["w"], torch.full((3,), 3.0))


def test_async_write_error_surfaces_at_wait(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    saver = Checkpointer(blocker, async_save=True, report=quiet)
    saver.save(1, {"x": torch.ones(1)})
    with pytest.raises(ckpt.CheckpointError, match="background checkpoint write failed"):
        saver.wait()


def test_non_main_ranks_write_nothing(tmp_path):
    saver = Checkpointer(tmp_path, is_main=False, report=quiet)
    assert saver.save(1, state()) is None
    assert not any(tmp_path.iterdir())


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.randn(), torch.randn(2)
    path = ckpt.save_state(tmp_path, 1, {"rng": rng_state()})
    expected = (random.random(), np.random.randn(), torch.randn(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(ckpt.load_state(path)["rng"])
    got = (random.random(), np.random.randn(), torch.randn(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_snapshot_copies_only_when_asked():
    t = torch.ones(2)
    shared = snapshot({"a": [t], "b": (t, 1)}, copy=False)
    copied = snapshot({"a": [t]}, copy=True)
    t.add_(1)
    assert shared["a"][0].data_ptr() == t.data_ptr() and shared["b"][1] == 1
    assert torch.equal(copied["a"][0], torch.ones(2))


def test_spec_changes_name_the_keys():
    _, old = spec_fingerprint({"train": {"lr": 0.001, "seed": 0}, "name": "a"})
    _, new = spec_fingerprint({"train": {"lr": 0.002, "seed": 0}, "name": "a"})
    assert spec_changes(old, new) == ["train.lr: 0.001 -> 0.002"]
    assert spec_changes(old, old) == []


def test_step_dir_names_sort_by_step():
    names = [ckpt.step_dir_name(s) for s in (9, 10, 100, 99999999)]
    assert names == sorted(names) and names[0] == "step_00000009"


def test_checkpoint_error_is_an_exception_users_can_catch():
    from hpcgpu import dist

    assert dist.CheckpointError is ckpt.CheckpointError


def test_resume_with_a_changed_spec_names_the_keys_that_matter():
    from hpcgpu.worker.report import resume_changes

    _, old = spec_fingerprint({"train": {"lr": 0.001, "log_every": 10}, "logging": {"dir": "a"}})
    _, new = spec_fingerprint({"train": {"lr": 0.002, "log_every": 5}, "logging": {"dir": "b"}})
    saved = {"spec": {"json": old}, "progress": {"world_size": 2}}
    lines = resume_changes(saved, new, world_size=4)
    assert len(lines) == 2
    assert "train.lr: 0.001 -> 0.002" in lines[0] and "log_every" not in lines[0] and "logging" not in lines[0]
    assert "saved with 2 ranks, resuming on 4" in lines[1]
    assert resume_changes(saved, old, world_size=2) == []
