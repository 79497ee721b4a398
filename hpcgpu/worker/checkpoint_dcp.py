"""FSDP checkpoints: every rank writes its shard with torch.distributed.checkpoint (DCP).

Layout inside the step directory: `shards/` (DCP's `__<rank>_<n>.distcp` files and `.metadata`),
`state.pt` (rank 0: the replicated trainer state) and `manifest.json`, written by rank 0 last,
after a barrier, once every rank's shard is on disk. DCP's `.metadata` is a pickle: torch's
reader would unpickle anything in it, so ours allows only the classes DCP metadata is made of.
"""

from __future__ import annotations

import io
import pickle
import time
from pathlib import Path

import torch

import torch.distributed as tdist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.optim import Optimizer

from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker.saver import Checkpointer
from hpcgpu.worker.state import snapshot

SHARDS = ckpt.SHARDS

_METADATA_MODULES = {"torch.distributed.checkpoint.metadata"}
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata and nothing else: a crafted .metadata cannot run code."""

    def find_class(self, module: str, name: str):
        if module in _METADATA_MODULES or (module, name) in _METADATA_CLASSES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise ckpt.CheckpointError(f"refusing {module}.{name} in a sharded checkpoint's .metadata "
                                   "(only DCP metadata classes may be unpickled)")


class SafeReader(dcp.FileSystemReader):
    """torch's FileSystemReader with read_metadata through _MetadataUnpickler (torch uses pickle.load)."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = Path(self.path) / ".metadata"
        metadata = _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
        if not isinstance(metadata, Metadata):
            raise ckpt.CheckpointError(f"{path} does not hold DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def save_sharded(saver: Checkpointer, step: int, model: nn.Module, optimizer: Optimizer,
                 state: dict, meta: dict, async_group=None) -> Path:
    """Collective: all ranks write their shards; rank 0 adds `state` and commits.

    With `async_group` (a gloo group of all ranks, used only by checkpoint writes) the call returns
    once the shards are copied to CPU memory: DCP writes them in the background, and a background
    thread on each rank then gathers the digests and rank 0 commits, all over `async_group`, so no
    collective of the training loop's group ever runs off the main thread. saver.wait() joins it.
    """
    saver.wait()  # one save in flight at most: its collectives must not interleave with this one's
    saver.last_step = step
    t0 = time.perf_counter()
    rank = tdist.get_rank()
    tmp = [str(ckpt.begin(saver.dir, step)) if rank == 0 else ""]
    tdist.broadcast_object_list(tmp, src=0)
    tmp_dir = Path(tmp[0])
    model_sd, optim_sd = get_state_dict(model, optimizer)
    writer = dcp.FileSystemWriter(str(tmp_dir / SHARDS), sync_files=True)
    final = saver.dir / ckpt.step_dir_name(step)
    if async_group is None:
        dcp.save({"model": model_sd, "optimizer": optim_sd}, storage_writer=writer)
        _commit_sharded(saver, step, tmp_dir, state, meta, None, t0)
        saver.last, saver.stall_s = final, time.perf_counter() - t0
        return final
    written = dcp.async_save({"model": model_sd, "optimizer": optim_sd}, storage_writer=writer,
                             process_group=async_group)
    state = snapshot(state, copy=True)  # the loop goes on changing what `state` refers to

    def finish() -> None:
        written.result()
        _commit_sharded(saver, step, tmp_dir, state, meta, async_group, t0)

    saver.in_background(finish)
    saver.last, saver.stall_s = final, time.perf_counter() - t0
    return final


def _commit_sharded(saver: Checkpointer, step: int, tmp_dir: Path, state: dict, meta: dict, group, t0: float) -> None:
    """Collective over `group`: every rank's shards are on disk; rank 0 writes state.pt and commits."""
    rank = tdist.get_rank()
    # Each rank hashes only what it wrote; rank 0 collects the digests for the manifest.
    mine = {f"{SHARDS}/{p.name}": ckpt.digest_file(p) for p in (tmp_dir / SHARDS).glob(f"__{rank}_*.distcp")}
    gathered: list = [None] * tdist.get_world_size()
    tdist.all_gather_object(gathered, mine, group=group)
    if rank == 0:
        files = {k: v for part in gathered for k, v in part.items()}
        files[f"{SHARDS}/.metadata"] = ckpt.digest_file(tmp_dir / SHARDS / ".metadata")
        files[ckpt.STATE] = ckpt.write_torch(state, tmp_dir / ckpt.STATE)
        final = ckpt.commit(tmp_dir, step, files, {"kind": "fsdp", **meta})
        saver.committed(final, step, time.perf_counter() - t0)
    tdist.barrier(group=group)


def load_sharded(path: Path, model: nn.Module, optimizer: Optimizer) -> None:
    """Collective: load model and optimizer shards of checkpoint `path` into the sharded objects."""
    reader = SafeReader(str(Path(path) / SHARDS))
    reader.read_metadata()  # refuse a crafted .metadata here, with our error, before DCP wraps it
    model_sd, optim_sd = get_state_dict(model, optimizer)
    sd = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(sd, storage_reader=reader)
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optimizer"])
