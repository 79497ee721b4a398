"""benchmarks/pagecache.py: a file's share of the page cache, and evicting one file (tier 10's cold reads)."""

from __future__ import annotations

import os

import pytest

from benchmarks.pagecache import evict, resident_fraction


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(4 << 20))
    return path


def test_a_file_just_written_is_cached_and_evict_drops_it(data):
    assert resident_fraction(data) == 1.0  # written through the page cache
    left = evict([data])
    if left > 0.05:
        pytest.skip(f"this file system keeps pages despite posix_fadvise ({left:.0%} left)")
    assert resident_fraction(data) == left <= 0.05


def test_reading_brings_the_pages_back(data):
    evict([data])
    data.read_bytes()
    assert resident_fraction(data) == 1.0


def test_an_empty_file_has_no_pages(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert resident_fraction(tmp_path / "empty") == 0.0
