"""docs/spec.md is generated from the spec models: it must match them."""

from pathlib import Path

from hpcgpu.host.specdoc import reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_is_up_to_date():
    assert (ROOT / "docs" / "spec.md").read_text() == reference_markdown(), "docs/spec.md is stale: run `make docs`"


def test_every_spec_field_is_documented():
    text = reference_markdown()
    for line in text.splitlines():
        if line.startswith("| `"):
            assert not line.rstrip().endswith("|  |"), f"field without a docstring: {line}"
