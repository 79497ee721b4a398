"""The resolved spec (spec.yaml, `hpcgpu spec show`, plan.json's copy): plain JSON data in the
order of docs/spec.md, every default filled in, secret env values written as <redacted>."""

from __future__ import annotations

import json

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import REDACTED
from hpcgpu.host.spec import dump_spec, parse_spec, resolved_data


def test_the_resolved_spec_keeps_the_order_of_the_reference():
    text = dump_spec(parse_spec("name: x\n"))
    assert text.startswith("# hpcgpu resolved spec: validated, every default filled in\nname: x\nentry:\n")
    sections = [ln.rstrip(":") for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert [s.split(":")[0] for s in sections] == ["name", "entry", "resources", "distributed", "train", "checkpoint",
                                                    "logging", "debug", "watchdog", "env", "secret_env", "slurm", "container"]


def test_the_resolved_data_is_plain_json_even_for_yaml_dates_and_binary_task_args():
    spec = parse_spec("entry: {task: m:f, task_args: {when: 2024-01-01, blob: !!binary aGVsbG8=}}\n")
    data = json.loads(json.dumps(resolved_data(spec)))  # plan.json holds it
    assert data["entry"]["task_args"] == {"when": "2024-01-01", "blob": "hello"}


def test_secret_env_values_are_redacted_and_others_kept():
    spec = parse_spec("env: {HF_TOKEN: t0k3n, SITE: s1, PLAIN: p}\nsecret_env: [SITE]\n")
    assert resolved_data(spec)["env"] == {"HF_TOKEN": REDACTED, "SITE": REDACTED, "PLAIN": "p"}
    assert spec.env["HF_TOKEN"] == "t0k3n"  # the spec itself still holds the value for the launch
    text = dump_spec(spec)
    assert "t0k3n" not in text and "s1" not in text and "PLAIN: p" in text


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just words\n", "str"), ("3\n", "int")])
def test_a_spec_that_is_not_a_mapping_says_what_it_is(text, kind):
    with pytest.raises(UserError) as info:
        parse_spec(text, "job.yaml")
    assert info.value.message == f"job.yaml: the spec must be a mapping of keys (name:, entry:, ...), got {kind}"


def test_an_empty_spec_is_every_default():
    assert resolved_data(parse_spec("", "job.yaml")) == resolved_data(parse_spec("{}\n", "job.yaml"))
    assert parse_spec("# nothing but a comment\n").name == "hpcgpu"


def test_an_invalid_spec_points_to_the_schema_and_the_reference():
    with pytest.raises(UserError) as info:
        parse_spec("resources: {nodes: 0}\n", "job.yaml")
    assert info.value.hint == "`hpcgpu spec schema` prints every key with its type; docs/spec.md explains them"
