"""`hpcgpu spec schema`: the JSON Schema editors read (yaml-language-server), printed the same way
every time (sorted keys, two-space indent) so a saved copy diffs cleanly, each property described
by its field's docstring."""

from __future__ import annotations

import json

from hpcgpu.host.spec import _attribute_docs, spec_schema


def test_the_schema_is_printed_with_sorted_keys_and_a_two_space_indent():
    text = spec_schema()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True)
    assert text.startswith('{\n  "$defs": {\n    "Checkpoint": {\n')


def test_each_property_is_described_by_its_docstring():
    schema = json.loads(spec_schema())
    assert schema["properties"]["name"]["description"] == \
        "Job name (run directories and Slurm job names start with it)."
    assert schema["$defs"]["Resources"]["properties"]["nodes"]["description"] == \
        "Number of nodes (one node agent per node)."


class _Documented:
    a: int = 1
    """the doc of a"""

    def method(self) -> None:
        pass

    "a stray string after a method documents nothing"

    b: int = 2
    c: int = 3
    """the doc of c"""


def test_only_a_string_right_after_a_field_is_its_doc():
    assert _attribute_docs(_Documented) == {"a": "the doc of a", "c": "the doc of c"}
