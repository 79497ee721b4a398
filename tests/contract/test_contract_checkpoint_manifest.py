"""contract.checkpoints.read_manifest / check_sizes: the host's cheap verification before `--resume`
(stdlib only). Each broken checkpoint is refused with a reason naming the directory and what is wrong,
since that reason is what the user reads when a resume is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcgpu.contract.checkpoints import CheckpointError, check_sizes, read_manifest


def checkpoint(tmp_path: Path, manifest, files: dict[str, bytes] | None = None) -> Path:
    d = tmp_path / "step_00000010"
    d.mkdir()
    for name, data in (files or {}).items():
        (d / name).write_bytes(data)
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (d / "manifest.json").write_text(text)
    return d


def refusal(call) -> str:
    with pytest.raises(CheckpointError) as raised:
        call()
    return str(raised.value)


def test_a_manifest_that_is_not_json_is_refused_naming_the_file(tmp_path):
    d = checkpoint(tmp_path, "{not json")
    reason = refusal(lambda: read_manifest(d))
    assert reason.startswith(f"{d}: unreadable manifest.json (")


@pytest.mark.parametrize("manifest, shown", [
    ({"format": 2, "files": {}}, "2"),              # a newer hpcgpu's checkpoint
    ({"format": 1, "files": ["state.pt"]}, "1"),    # the right format, files not a mapping
    ({"files": {}}, "None"),                        # no format at all
    (["format", 1], "None"),                        # not an object
])
def test_a_manifest_of_another_format_is_refused_naming_its_format(tmp_path, manifest, shown):
    d = checkpoint(tmp_path, manifest)
    assert refusal(lambda: read_manifest(d)) == f"{d}: manifest.json has an unknown format {shown}"


def test_a_manifest_of_format_1_with_a_files_mapping_is_read(tmp_path):
    manifest = {"format": 1, "step": 10, "files": {}}
    assert read_manifest(checkpoint(tmp_path, manifest)) == manifest


def test_a_file_the_manifest_lists_but_the_directory_lacks_is_named(tmp_path):
    d = checkpoint(tmp_path, {"format": 1, "files": {"state.pt": {"bytes": 3, "sha256": "0" * 64}}})
    assert refusal(lambda: check_sizes(d)) == f"{d}: state.pt is missing"


def test_a_file_shorter_than_the_manifest_says_is_called_truncated(tmp_path):
    d = checkpoint(tmp_path, {"format": 1, "files": {"state.pt": {"bytes": 3, "sha256": "0" * 64}}},
                   {"state.pt": b"ab"})
    assert refusal(lambda: check_sizes(d)) == f"{d}: state.pt has 2 bytes, the manifest says 3 (truncated)"
