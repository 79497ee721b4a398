"""The page cache of single files: how much of a file is cached, and evicting just those files.

Tier 10 compares a cold read of a checkpoint with a resume from it. Dropping the whole page cache
(/proc/sys/vm/drop_caches, tier 6) needs root and also evicts Python's and torch's own files, so
every launch would then pay for reading torch from disk: seconds of noise around a sub-second
figure. posix_fadvise(DONTNEED) evicts only the files named, and any user may do it; mincore says
whether it worked (a file system may ignore the advice). Linux only (the suite's platform).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

_PAGE = mmap.PAGESIZE
_PROT_READ, _MAP_SHARED = 0x1, 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    return libc


def resident_fraction(path: Path) -> float:
    """Fraction (0-1) of the file's pages that are in the page cache; 0 for an empty file.

    mincore on a shared read-only mapping made with libc's mmap (Python's mmap object does not give
    its address without a writable buffer); mapping touches no page, so it reads nothing."""
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    libc = _libc()
    pages = (size + _PAGE - 1) // _PAGE
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
        try:
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore on {path} failed")
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec) / pages


def evict(paths: list[Path]) -> float:
    """Write out, then drop these files' pages from the page cache; return the largest fraction
    still cached afterwards (0.0: evicted; near 1: the file system ignored the advice)."""
    left = 0.0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        left = max(left, resident_fraction(path))
    return left
