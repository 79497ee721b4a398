"""The spec: safe loading, unknown keys, wrong types, impossible combinations, key paths and lines."""

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import Spec, apply_overrides, dump_spec, env_overrides, load_spec, parse_spec, spec_schema


def error_of(text: str) -> str:
    with pytest.raises(UserError) as info:
        parse_spec(text, "job.yaml")
    return str(info.value)


def test_defaults_are_the_demo():
    spec = parse_spec("")
    assert spec.entry.task == "hpcgpu.examples.mlp:make_task"
    assert spec.resources.procs_per_node == 2


def test_round_trip_through_dump():
    spec = parse_spec("name: x\ntrain: {lr: 0.5, strategy: fsdp}\nenv: {A: b}\n")
    assert parse_spec(dump_spec(spec)) == spec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("resources:\n  gpuz: 1\n", "resources.gpuz (line 2): unknown key"),
        ("resources:\n  nodes: 0\n", "resources.nodes (line 2): Input should be greater than or equal to 1"),
        ("resources:\n  nodes: two\n", "resources.nodes (line 2): Input should be a valid integer"),
        ("resources:\n  gpus_per_node: -1\n", "resources.gpus_per_node (line 2): must be >= 0 or 'all'"),
        ("train:\n  batch_size: 0\n", "train.batch_size (line 2)"),
        ("train:\n  precision: fp8\n", "train.precision (line 2): Input should be 'fp32', 'bf16' or 'fp16'"),
        ("train:\n  lr: -1\n", "train.lr (line 2): Input should be greater than 0"),
        ("checkpoint:\n  keep_last: 1\n", "checkpoint.keep_last (line 2): keep_last must be >= 2"),
        ("entry:\n  script: a.py\n  task: m:f\n", "entry (line 1): give exactly one of script, module or task"),
        ("entry:\n  task: notatask\n", "task must look like 'package.module:function'"),
        ("resources: {nodes: 2}\ntrain: {strategy: dp}\n", "train.strategy dp runs one process on one node"),
        ("train: {strategy: dp, precision: bf16}\n", "train.strategy dp with train.precision bf16"),
        ("resources:\n  mem: lots\n", "resources.mem (line 2): memory looks like 64G"),
        ("resources:\n  time: forever\n", "resources.time (line 2): time looks like"),
        ("name: 'a b;rm -rf /'\n", "name (line 1): name: letters, digits"),
        ("env:\n  'BAD NAME': x\n", "environment variable name 'BAD NAME' is not valid"),
        ("slurm:\n  extra: {'--x; rm': 1}\n", "sbatch option name"),
    ],
)
def test_bad_input_names_the_key_and_line(text, expected):
    assert expected in error_of(text)


def test_several_problems_are_all_listed():
    msg = error_of("resources: {nodes: 0}\ntrain: {batch_size: -2}\n")
    assert "2 problems" in msg and "resources.nodes" in msg and "train.batch_size" in msg


def test_malformed_yaml_names_line_and_column():
    assert "job.yaml: line 2, column" in error_of("a: [1\nb: 2\n")


def test_python_object_tags_are_refused():
    msg = error_of("name: !!python/object/apply:os.system ['touch /tmp/pwned']\n")
    assert "not valid YAML" in msg and "Python object tags" in msg


def test_duplicate_keys_are_refused():
    assert "duplicate key 'name'" in error_of("name: a\nname: b\n")


def test_top_level_must_be_a_mapping():
    assert "must be a mapping" in error_of("- a\n- b\n")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_no_file_means_bundled_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, source = load_spec(None)
    assert source == "<bundled demo>" and spec.name == "demo"
    (tmp_path / "hpcgpu.yaml").write_text("name: mine\n")
    assert load_spec(None)[0].name == "mine"


def test_precedence_env_then_flags():
    spec = parse_spec("resources: {nodes: 1}\n")
    spec = apply_overrides(spec, env_overrides({"HPCGPU_NODES": "3", "UNRELATED": "x"}))
    assert spec.resources.nodes == 3
    assert apply_overrides(spec, {"resources.nodes": 4}).resources.nodes == 4


def test_bad_override_names_the_key():
    with pytest.raises(UserError, match="resources.nodes"):
        apply_overrides(Spec(), {"resources.nodes": 0})


def test_schema_lists_every_section():
    schema = spec_schema()
    for key in ("entry", "resources", "distributed", "train", "checkpoint", "logging", "debug", "env", "slurm", "container"):
        assert f'"{key}"' in schema
