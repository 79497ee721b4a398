"""Checkpoints hold the model: every directory and file of one is owner-only whatever the umask,
and a checkpoint directory deleted during a run comes back private, with a warning."""

from __future__ import annotations

import os
import shutil
import stat

import torch

from hpcgpu.worker import checkpoint as ckpt


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_permissive_umask_still_gives_owner_only_checkpoints(tmp_path, capsys):
    old = os.umask(0)
    try:
        ckpt_dir = tmp_path / "ckpt"
        step = ckpt.save_state(ckpt_dir, 3, {"w": torch.ones(2)})
        assert (mode(ckpt_dir), mode(step)) == (0o700, 0o700)
        assert {p.name: mode(p) for p in step.iterdir()} == {ckpt.STATE: 0o600, ckpt.MANIFEST: 0o600}
        assert "vanished" not in capsys.readouterr().out  # made for the first time: no warning

        shutil.rmtree(ckpt_dir)  # someone deletes it mid-run
        step = ckpt.save_state(ckpt_dir, 4, {"w": torch.ones(2)})
        assert (mode(ckpt_dir), mode(step), mode(step / ckpt.STATE)) == (0o700, 0o700, 0o600)
        assert f"the checkpoint directory {ckpt_dir} vanished during the run" in capsys.readouterr().out
        assert torch.equal(ckpt.load_state(step)["w"], torch.ones(2))
    finally:
        os.umask(old)


def test_files_another_writer_put_in_a_step_directory_become_private_at_commit(tmp_path):
    old = os.umask(0)
    try:
        tmp = ckpt.begin(tmp_path / "ckpt", 5)
        (tmp / "__0_0.distcp").write_bytes(b"shard")  # as torch.distributed.checkpoint writes it: 0666 here
        (tmp / "sub").mkdir()
        final = ckpt.commit(tmp, 5, {"__0_0.distcp": ckpt.digest_file(tmp / "__0_0.distcp")}, {"kind": "dcp"})
        assert mode(final / "__0_0.distcp") == 0o600 and mode(final / "sub") == 0o700
        assert mode(final / ckpt.MANIFEST) == 0o600
    finally:
        os.umask(old)
