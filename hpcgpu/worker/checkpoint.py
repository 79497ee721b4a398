"""Checkpoints on disk: step-numbered directories that appear complete or not at all.

A checkpoint is written into `.step_00000100.tmp-<pid>/`, every file fsynced, then
`manifest.json` (sizes and SHA-256 of every file) is written last as the commit marker, the
directory is renamed to `step_00000100/` and the parent directory fsynced. Resume trusts only a
directory whose manifest matches its files, so a crash or SIGKILL mid-write leaves the previous
checkpoint in charge. Files are loaded with `torch.load(weights_only=True, mmap=True)`: tensors and
plain values only, never pickled objects, mapped rather than read into every rank's memory. Which
rank verifies (hashing every byte once per job, not once per rank) is decided in context.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import torch

# the directory layout and manifest rules live in contract.checkpoints (the host reads them too)
from hpcgpu.contract.checkpoints import (CORRUPT_SUFFIX, FORMAT, MANIFEST, CheckpointError, check_sizes,  # noqa: F401
                                         list_checkpoints, read_manifest, step_dir_name, why_broken)
from hpcgpu.contract.procs import pid_alive
from hpcgpu.contract.runfiles import make_private_dir

STATE = "state.pt"
SHARDS = "shards"  # FSDP: torch.distributed.checkpoint files (see checkpoint_dcp.py)
_CHUNK = 1 << 22

Report = Callable[[str], None]


class Skipped(NamedTuple):
    """A checkpoint resume passed over, and why."""

    path: Path
    reason: str


#: chunks at least this big (a tensor's storage) are hashed in a helper thread while they are written
_OVERLAP_MIN = 1 << 20
_hash_pool: Optional[ThreadPoolExecutor] = None


def _hasher() -> ThreadPoolExecutor:
    global _hash_pool
    if _hash_pool is None:
        _hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcgpu-ckpt-hash")
    return _hash_pool


class _HashingWriter:
    """A file wrapper that hashes and counts bytes as torch.save writes them (no second read).

    A large chunk is hashed in a helper thread while this thread writes it: SHA-256 and the write
    both release the GIL, so the hash (about a fifth of a save when done in turn) mostly hides behind
    the write. The chunk (a memoryview torch may reuse) is only read while write() runs."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        if n >= _OVERLAP_MIN:
            hashing = _hasher().submit(self.sha.update, data)
            try:
                written = self.f.write(data)
            finally:
                hashing.result()
        else:
            self.sha.update(data)
            written = self.f.write(data)
        self.size += n
        return written

    def flush(self) -> None:
        self.f.flush()


def fsync_dir(path: Path) -> None:
    """Make a rename or file creation inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def without_zip_crc32():
    """torch.save off its per-record zip CRC32 while we save: nothing reads it (torch.load does not
    check it; the manifest's SHA-256 covers every byte and is verified before any load), and it cost
    about 40% of a 256 MiB save (benchmark tier 6). torch without set_crc32_options: left on."""
    get = getattr(torch.serialization, "get_crc32_options", None)
    set_ = getattr(torch.serialization, "set_crc32_options", None)
    if get is None or set_ is None:
        yield
        return
    before = get()
    set_(False)
    try:
        yield
    finally:
        set_(before)


def write_torch(obj: Any, path: Path) -> dict:
    """torch.save obj to path, fsync it, and return its manifest entry (bytes, sha256)."""
    with open(path, "wb", opener=_private) as f:
        w = _HashingWriter(f)
        with without_zip_crc32():
            torch.save(obj, w)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": w.size, "sha256": w.sha.hexdigest()}


def digest_file(path: Path) -> dict:
    """Manifest entry of a file written by someone else (e.g. a torch.distributed.checkpoint shard)."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": sha.hexdigest()}


#: checkpoint directories this process has saved into (to tell "vanished" from "not made yet")
_saved_into: set[Path] = set()


def _private(path: str, flags: int) -> int:
    """open()'s opener for checkpoint files: owner-only (0600) whatever the umask."""
    return os.open(path, flags, 0o600)


def begin(ckpt_dir: Path, step: int) -> Path:
    """Create and return the temporary directory a checkpoint of `step` is written into. The
    checkpoint directory and every step directory are owner-only (0700) whatever the umask: a
    directory deleted mid-run comes back private too, with a warning."""
    if not ckpt_dir.exists():
        if ckpt_dir in _saved_into:
            print(f"hpcgpu: warning: the checkpoint directory {ckpt_dir} vanished during the run (deleted?); "
                  "making it again, owner-only, and saving there", flush=True)
        make_private_dir(ckpt_dir)
    _saved_into.add(ckpt_dir)
    tmp = ckpt_dir / f".{step_dir_name(step)}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(mode=0o700)
    os.chmod(tmp, 0o700)
    return tmp


def commit(tmp: Path, step: int, files: dict[str, dict], meta: dict) -> Path:
    """Write the manifest last, then rename tmp to its step name: the checkpoint now exists."""
    manifest = {"format": FORMAT, "step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": files, **meta}
    for written in tmp.rglob("*"):  # shards torch.distributed.checkpoint wrote with the umask's mode
        os.chmod(written, 0o700 if written.is_dir() else 0o600)
    with open(tmp / MANIFEST, "w", opener=_private) as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    final = tmp.parent / step_dir_name(step)
    if final.exists():  # the same step saved again (e.g. a stop right after resuming): replace it
        old = tmp.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    fsync_dir(tmp.parent)
    return final


def save_state(ckpt_dir: Path, step: int, state: dict, meta: Optional[dict] = None) -> Path:
    """Atomically save one state dict as checkpoint `step` (the DDP and user-script format)."""
    tmp = begin(ckpt_dir, step)
    try:
        files = {STATE: write_torch(state, tmp / STATE)}
        return commit(tmp, step, files, {"kind": "state", **(meta or {})})
    except BaseException:
        # a half-written checkpoint is never loaded, but it keeps the space a retry needs (disk full)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def verify(path: Path) -> dict:
    """Check every file against the manifest (size, then SHA-256); return the manifest."""
    manifest = check_sizes(path)
    for name, want in manifest["files"].items():
        if digest_file(path / name)["sha256"] != want["sha256"]:
            raise CheckpointError(f"{path}: {name} does not match its checksum (corrupt)")
    return manifest


def latest_valid(ckpt_dir: Path, report: Report = print, skipped: Optional[list] = None) -> Optional[Path]:
    """The newest checkpoint that verifies; each one skipped is reported and added to `skipped`
    (as a Skipped: path and reason)."""
    for _, path in list_checkpoints(ckpt_dir):
        try:
            verify(path)
            return path
        except CheckpointError as e:
            report(f"hpcgpu: skipping checkpoint {e}; trying the previous one")
            if skipped is not None:
                skipped.append(Skipped(path, why_broken(e, path)))
    return None


def quarantine(path: Path) -> Path:
    """Rename a broken checkpoint to `<name>.corrupt` so pruning and resume ignore it (kept for a look)."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    path.rename(target)
    return target


def all_lost_warning(ckpt_dir: Path, set_aside: list[Skipped]) -> str:
    """The warning of a resume that found checkpoints but could use none: it starts from step 0, and
    that must not pass as a quiet first run. `set_aside`: where each broken one went, and why."""
    bar = "hpcgpu: " + "!" * 78
    n = len(set_aside)
    lines = [bar, f"hpcgpu: WARNING: {n} checkpoint{'s' if n != 1 else ''} found in {ckpt_dir}; none could be used:"]
    lines += [f"hpcgpu:   {s.path.name}: {s.reason}" for s in set_aside]
    lines += [f"hpcgpu: each was set aside as <name>{CORRUPT_SUFFIX} (kept for a look; delete them to free the space)",
              "hpcgpu: WARNING: starting from step 0: all progress of this run is lost", bar]
    return "\n".join(lines)


def resolve_resume(setting: str, ckpt_dir: Path, report: Report = print,
                   skipped: Optional[list] = None) -> Optional[Path]:
    """`auto` -> newest valid checkpoint (None on a first run), `never` -> None, else that path."""
    if setting == "never":
        return None
    if setting == "auto":
        return latest_valid(ckpt_dir, report, skipped)
    path = Path(setting)
    if not path.is_absolute() and not path.exists() and (ckpt_dir / setting).exists():
        path = ckpt_dir / setting  # checkpoint.resume: step_00000100
    if path.is_file():
        return path
    verify(path)  # an explicitly named checkpoint that is broken is an error, not a silent restart
    return path


def mmap_refused(error: RuntimeError) -> bool:
    """torch.load(mmap=True) refused a file in the legacy (pre-zip) format; plain load still reads it."""
    return "mmap can only be used with files saved with" in str(error)


def load_file(path: Path, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True; a pickled object inside is refused with a clear error.

    The file is memory-mapped (mmap=True): tensors are read from the page cache when used, so the
    ranks of a node share one copy of it instead of each holding the whole file in its memory (pages
    a rank then changes, such as optimizer state, are copied on write; the file never changes)."""
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as e:
            if not mmap_refused(e):
                raise
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"refusing to load {path}: it carries a pickled Python object ({found.group(1)}), which "
                "could run code when loaded. hpcgpu checkpoints hold only tensors and plain values "
                "(dict, list, int, float, str). If you trust the file, load it yourself with "
                "torch.load(path, weights_only=False)."
            ) from None
        raise CheckpointError(f"{path}: not a loadable torch checkpoint ({str(e).splitlines()[0][:200]})") from None
    except RuntimeError as e:
        raise CheckpointError(f"{path}: not a loadable torch checkpoint ({str(e).splitlines()[0][:200]})") from None


def is_sharded(path: Path) -> bool:
    """True for an FSDP checkpoint (model and optimizer in `shards/`)."""
    return (Path(path) / SHARDS).is_dir()


def load_state(path: Path, map_location: Any = "cpu") -> dict:
    """Load `state.pt` of checkpoint directory `path` (or `path` itself if it is a file)."""
    path = Path(path)
    return load_file(path if path.is_file() else path / STATE, map_location)


def prune(ckpt_dir: Path, keep_last: int, keep: Optional[Path] = None, best: Optional[Path] = None) -> list[Path]:
    """Delete committed checkpoints beyond the newest keep_last (never `keep`, nor `best`: the one
    checkpoint.keep_best keeps), and leftovers of dead writers."""
    removed = []
    for _, path in list_checkpoints(ckpt_dir)[keep_last:]:
        if path != keep and path != best:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for tmp in ckpt_dir.glob(".step_*.*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed
