"""state.pt is written without torch's per-record zip CRC32 (hpcgpu/worker/checkpoint.py,
without_zip_crc32): the manifest's SHA-256 already covers every byte and is verified before any load,
and the CRC cost about 40% of a save. The file still loads, corruption is still caught, and torch's
global setting is left as it was."""

from __future__ import annotations

import zipfile

import pytest
import torch

from hpcgpu.worker import checkpoint as ckpt


def state() -> dict:
    return {"model": {"w": torch.arange(4096, dtype=torch.float32)}, "step": 3}


def data_crcs(path) -> list[int]:
    with zipfile.ZipFile(path) as z:
        return [i.CRC for i in z.infolist() if "/data/" in i.filename]


def test_the_records_carry_no_crc_yet_the_file_loads_and_the_setting_is_restored(tmp_path):
    assert torch.serialization.get_crc32_options() is True
    entry = ckpt.write_torch(state(), tmp_path / "state.pt")
    assert data_crcs(tmp_path / "state.pt") == [0]
    assert torch.serialization.get_crc32_options() is True  # others' torch.save unchanged
    loaded = torch.load(tmp_path / "state.pt", weights_only=True, mmap=True)
    assert torch.equal(loaded["model"]["w"], state()["model"]["w"]) and loaded["step"] == 3
    assert entry == ckpt.digest_file(tmp_path / "state.pt")  # the manifest entry is the file's


def test_a_flipped_byte_is_still_caught_by_the_manifest(tmp_path):
    path = ckpt.save_state(tmp_path, 5, state())
    data = bytearray((path / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "state.pt").write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="state.pt"):
        ckpt.verify(path)


def test_a_torch_without_the_option_saves_with_crc_as_before(tmp_path, monkeypatch):
    monkeypatch.delattr(torch.serialization, "set_crc32_options")
    ckpt.write_torch(state(), tmp_path / "state.pt")
    (crc,) = data_crcs(tmp_path / "state.pt")
    assert crc != 0


def test_the_setting_is_restored_when_the_save_fails(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        ckpt.write_torch({"x": Unpicklable()}, tmp_path / "state.pt")
    assert torch.serialization.get_crc32_options() is True
