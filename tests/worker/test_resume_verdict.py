"""Resume verification shared across ranks: rank 0 hashes, the others take its verdict from the
agent's store and hash nothing, with the same fallback and the same errors. A dict stands in for
the TCPStore (set/get/wait); one test uses a real TCPStore the way the ranks do. Also: state.pt is
memory-mapped when loaded, with map_location and for files in torch's legacy format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpcgpu.contract.specview import SpecView
from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker import context
from hpcgpu.worker.rank import RankInfo

AGENT_ENV = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


class DictStore:
    """The three TCPStore calls verify_and_share makes."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def get(self, key: str) -> bytes:
        return self.data[key]

    def wait(self, keys: list[str]) -> None:
        missing = [k for k in keys if k not in self.data]
        assert not missing, f"a rank would wait forever for {missing}"


def rank_ctx(rank: int, ckpt_dir: Path, resume: str = "auto", world: int = 2) -> context.WorkerContext:
    info = RankInfo(rank, rank, world, world, 0, "torchrun")
    spec = SpecView({"checkpoint": {"resume": resume}, "distributed": {"timeout_s": 30}})
    return context.WorkerContext(info=info, spec=spec, run_dir=ckpt_dir.parent, ckpt_dir=ckpt_dir)


@pytest.fixture
def hashed(monkeypatch) -> list[Path]:
    """Every file digest_file reads (verify's only reader), in order."""
    calls: list[Path] = []
    real = ckpt.digest_file

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(ckpt, "digest_file", counting)
    return calls


def corrupt_same_size(path: Path) -> None:
    data = bytearray((path / ckpt.STATE).read_bytes())
    data[-100] ^= 0xFF
    (path / ckpt.STATE).write_bytes(bytes(data))


def test_share_mode():
    one, two = RankInfo(0, 0, 1, 1, 0, "single"), RankInfo(1, 1, 2, 2, 0, "torchrun")
    assert context.share_mode(one, AGENT_ENV) == "alone"
    assert context.share_mode(two, AGENT_ENV) == "store"
    assert context.share_mode(two, {**AGENT_ENV, "TORCHELASTIC_USE_AGENT_STORE": "False"}) == "each"
    assert context.share_mode(two, {"MASTER_ADDR": "n1", "MASTER_PORT": "29500"}) == "each"  # srun per rank
    assert context.share_mode(two, {"TORCHELASTIC_USE_AGENT_STORE": "True"}) == "each"


def test_each_attempt_has_its_own_verdict_key():
    first = context.verdict_key({"TORCHELASTIC_RESTART_COUNT": "0"})
    assert first == context.verdict_key({}) != context.verdict_key({"TORCHELASTIC_RESTART_COUNT": "1"})


def test_verdicts_round_trip():
    assert context.decode_verdict(context.encode_verdict(Path("/c/step_00000010"))) == Path("/c/step_00000010")
    assert context.decode_verdict(context.encode_verdict(None)) is None
    with pytest.raises(ckpt.CheckpointError, match="is missing"):
        context.decode_verdict(context.encode_verdict(None, "/c/step_1: state.pt is missing"))


def test_rank_0_hashes_once_and_the_other_rank_takes_its_fallback_without_reading(tmp_path, hashed, capsys):
    ckpt_dir = tmp_path / "ckpts"
    ckpt.save_state(ckpt_dir, 10, {"w": torch.ones(4)})
    newest = ckpt.save_state(ckpt_dir, 20, {"w": torch.ones(4)})
    corrupt_same_size(newest)  # only SHA-256 finds it: the case the hashing is for
    store, key = DictStore(), context.verdict_key({})

    ctx0 = rank_ctx(0, ckpt_dir)
    assert context.verify_and_share(ctx0, store, key) == ckpt_dir / "step_00000010"
    assert [s.path for s in ctx0.skipped] == [newest]  # rank 0 sets it aside later (agree_resume)
    assert len(hashed) == 2  # the corrupt newest, then the previous one
    assert "verified step_00000010 (0.0 MB) once for all 2 ranks" in capsys.readouterr().out

    hashed.clear()
    ctx1 = rank_ctx(1, ckpt_dir)
    assert context.verify_and_share(ctx1, store, key) == ckpt_dir / "step_00000010"
    assert hashed == [] and ctx1.skipped == []
    assert "verified by rank 0, not hashed again here" in capsys.readouterr().out


def test_no_checkpoint_is_shared_as_a_start_at_step_0(tmp_path, hashed):
    store, key = DictStore(), "k"
    assert context.verify_and_share(rank_ctx(0, tmp_path / "none"), store, key) is None
    assert context.verify_and_share(rank_ctx(1, tmp_path / "none"), store, key) is None


def test_a_broken_named_checkpoint_fails_every_rank_with_rank_0s_reason(tmp_path, hashed):
    named = ckpt.save_state(tmp_path / "ckpts", 10, {"w": torch.ones(4)})
    corrupt_same_size(named)
    store, key = DictStore(), "k"
    for rank in (0, 1):
        with pytest.raises(ckpt.CheckpointError, match="does not match its checksum"):
            context.verify_and_share(rank_ctx(rank, tmp_path / "ckpts", resume=str(named)), store, key)
    assert hashed == [named / ckpt.STATE]  # rank 0's check only


def test_resolve_resume_goes_through_the_agents_store(tmp_path, hashed):
    # the ranks' path end to end: a TCPStore client on MASTER_ADDR:MASTER_PORT, as under the agent
    from torch.distributed import TCPStore

    server = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {**AGENT_ENV, "MASTER_PORT": str(server.port), "TORCHELASTIC_RESTART_COUNT": "3"}
    good = ckpt.save_state(tmp_path / "ckpts", 10, {"w": torch.ones(4)})
    assert context.resolve_resume(rank_ctx(0, tmp_path / "ckpts"), env) == good
    hashed.clear()
    assert context.resolve_resume(rank_ctx(1, tmp_path / "ckpts"), env) == good
    assert hashed == []
    assert context.decode_verdict(server.get(context.verdict_key(env))) == good


def test_without_a_store_every_rank_verifies_as_before(tmp_path, hashed):
    good = ckpt.save_state(tmp_path / "ckpts", 10, {"w": torch.ones(4)})
    srun = {"MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
    assert context.resolve_resume(rank_ctx(1, tmp_path / "ckpts"), srun) == good
    assert hashed == [good / ckpt.STATE]


def test_state_is_memory_mapped_not_read_into_memory(tmp_path):
    path = ckpt.save_state(tmp_path, 1, {"w": torch.arange(1 << 16, dtype=torch.float32)})
    state = ckpt.load_state(path)
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(path / ckpt.STATE) in maps.read_text()  # the tensor's pages are the file's
    assert torch.equal(state["w"], torch.arange(1 << 16, dtype=torch.float32))
    state["w"] += 1  # copy on write: the checkpoint on disk does not change
    assert ckpt.verify(path)


def test_memory_mapped_load_honours_map_location(tmp_path):
    path = ckpt.save_state(tmp_path, 1, {"w": torch.ones(3)})
    loaded = ckpt.load_state(path, map_location=lambda storage, _loc: storage)
    assert torch.equal(loaded["w"], torch.ones(3))
    assert ckpt.load_state(path, map_location=torch.device("cpu"))["w"].device.type == "cpu"


def test_a_legacy_format_file_still_loads(tmp_path):
    legacy = tmp_path / "old.pt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)  # mmap cannot map it
    assert torch.equal(ckpt.load_state(legacy)["w"], torch.ones(3))
