"""The golden helper: a mismatch shows a unified diff and how to regenerate; regeneration writes."""

from __future__ import annotations

import pytest

from tests.helpers import golden
from tests.helpers.golden import assert_golden


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(golden, "DATA", tmp_path)
    monkeypatch.delenv("HPCGPU_REGEN_GOLDEN", raising=False)
    return tmp_path


def test_mismatch_prints_diff_and_regen_hint(data_dir):
    (data_dir / "x.txt").write_text("apptainer exec\n--nv\n")
    with pytest.raises(pytest.fail.Exception) as info:
        assert_golden("x.txt", "apptainer exec\n--bind /a\n")
    message = str(info.value)
    assert "---nv" in message and "+--bind /a" in message
    assert "HPCGPU_REGEN_GOLDEN=1 pytest -k golden" in message


def test_missing_file_says_how_to_create(data_dir):
    with pytest.raises(pytest.fail.Exception, match="HPCGPU_REGEN_GOLDEN=1"):
        assert_golden("new.txt", "text\n")


def test_regen_writes_the_file(data_dir, monkeypatch):
    monkeypatch.setenv("HPCGPU_REGEN_GOLDEN", "1")
    assert_golden("sub/new.txt", "text\n")
    assert (data_dir / "sub" / "new.txt").read_text() == "text\n"
    monkeypatch.delenv("HPCGPU_REGEN_GOLDEN")
    assert_golden("sub/new.txt", "text\n")
