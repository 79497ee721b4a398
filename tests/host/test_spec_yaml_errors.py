"""YAML that cannot become a spec: the message says where (line and column), what is wrong, and,
for the refusals hpcgpu adds to YAML (duplicate keys, anchors, too many values), what to do."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host import spec as spec_module
from hpcgpu.host.spec import parse_spec


def refused(text: str) -> UserError:
    with pytest.raises(UserError) as info:
        parse_spec(text, "job.yaml")
    return info.value


def test_a_duplicate_key_names_the_key_and_where_it_repeats():
    assert refused("name: a\nlogging: {dir: x}\nname: b\n").message == \
        "job.yaml: line 3, column 1: not valid YAML: duplicate key 'name'"


def test_too_many_values_names_where_the_limit_was_crossed(monkeypatch):
    monkeypatch.setattr(spec_module, "MAX_SPEC_NODES", 20)
    # nodes: mapping, entry, {..}, task, m:f, task_args, {..} = 7, then k0 1 k1 1 ... : the 21st is
    # the value of k6 on line 10
    text = "entry:\n  task: m:f\n  task_args:\n" + "".join(f"    k{i}: 1\n" for i in range(7))
    assert refused(text).message == \
        "job.yaml: line 10, column 9: not valid YAML: more than 20 values: a spec is far smaller"


def test_the_size_bound_is_the_documented_1_mib():
    assert spec_module.MAX_SPEC_BYTES == 1_048_576


def test_a_spec_text_of_exactly_the_bound_loads(monkeypatch):
    monkeypatch.setattr(spec_module, "MAX_SPEC_BYTES", 100)  # small: a 1 MiB text takes seconds to scan
    text = "name: big\n"
    text += "#" * (100 - len(text) - 1) + "\n"
    assert len(text) == 100
    assert parse_spec(text, "job.yaml").name == "big"
    with pytest.raises(UserError, match="101 characters"):
        parse_spec(text + "\n", "job.yaml")


def test_a_spec_text_over_1_mib_says_how_big_and_where_data_belongs():
    error = refused("#" * 1_048_577)
    assert error.message == "job.yaml: 1048577 characters: a spec may have at most 1048576 (1 MiB)"
    assert error.hint == "put data in files the task reads, not in the spec"


def test_a_control_character_is_refused_as_yaml_not_a_crash():
    # the YAML reader's error carries no line mark
    error = refused("name: a\x07b\n")
    assert error.message == "job.yaml: not valid YAML: unacceptable character #x0007: special characters are not allowed"


def test_a_syntax_error_says_what_was_expected_where():
    error = refused("a: [1\nb: 2\n")
    assert error.message == "job.yaml: line 2, column 2: not valid YAML: expected ',' or ']', but got ':'"
    assert error.hint is None


def test_a_python_object_tag_is_refused_with_the_reason():
    error = refused("name: !!python/object/apply:os.system ['true']\n")
    assert "not valid YAML: could not determine a constructor for the tag" in error.message
    assert error.hint == "hpcgpu loads YAML safely: Python object tags (!!python/...) are refused"


def test_an_alias_is_refused_with_what_to_do_instead():
    error = refused("name: &n x\nlogging: {dir: *n}\n")
    assert error.message == ("job.yaml: line 1, column 7: not valid YAML: "
                             "YAML anchors and aliases (&name, *name) are not allowed in a spec")
    assert error.hint == "write the value out where the alias stood"
