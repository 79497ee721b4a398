"""A spec that does not load says which key is wrong, on which line, and why (docs/spec.md: "every
error names the key path and line"); overrides say whether the bad value came from command-line
options or from which HPCGPU_* variables; a spec file that cannot be read says what to do."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import Spec, apply_overrides, env_overrides, load_spec, parse_spec


def problems(text: str) -> list[str]:
    with pytest.raises(UserError) as info:
        parse_spec(text, "job.yaml")
    return str(info.value).splitlines()


# ---------------------------------------------------------------- the heading: how many problems


def test_one_problem_is_counted_in_the_singular():
    assert problems("resources:\n  nodes: 0\n")[0] == "job.yaml: invalid spec (1 problem)"


def test_several_problems_are_counted_in_the_plural():
    assert problems("resources:\n  nodes: 0\n  procs_per_node: 0\n")[0] == "job.yaml: invalid spec (2 problems)"


# ---------------------------------------------------------------- the key path


def test_an_item_of_a_list_is_named_by_its_index_and_its_own_line():
    lines = problems("entry:\n  task: m:f\n  args:\n    - ok\n    - ok\n    - [not, a, string]\n")
    assert "  entry.args.2 (line 6): Input should be a valid string" in lines


def test_a_mapping_inside_a_list_is_an_error_naming_the_item_not_a_crash():
    lines = problems("entry:\n  task: m:f\n  args:\n    - ok\n    - {a: 1}\n")
    assert "  entry.args.1 (line 5): Input should be a valid string" in lines


def test_the_branches_of_a_union_are_not_shown_as_keys():
    # gpus_per_node is a count or `all`: pydantic reports each branch ('int', "literal['all']")
    lines = problems("resources:\n  gpus_per_node: many\n")
    assert lines[1:3] == ["  resources.gpus_per_node (line 2): Input should be a valid integer, unable to parse "
                          "string as an integer",
                          "  resources.gpus_per_node (line 2): Input should be 'all'"]


def test_the_branches_of_an_sbatch_option_are_not_shown_as_keys():
    # a string, a number or a boolean: the key is slurm.extra.exclusive for all three
    lines = problems("slurm:\n  extra:\n    exclusive: [1]\n")
    assert lines[1:4] == ["  slurm.extra.exclusive (line 3): Input should be a valid string",
                          "  slurm.extra.exclusive (line 3): Input should be a valid integer",
                          "  slurm.extra.exclusive (line 3): Input should be a valid boolean"]


def test_a_rule_about_several_keys_is_reported_at_the_top_level():
    lines = problems("train: {strategy: dp}\nresources: {nodes: 2}\n")
    assert any(ln.startswith("  (top level): train.strategy dp runs one process on one node") for ln in lines), lines


def test_a_missing_key_is_reported_at_the_line_of_its_section():
    lines = problems("name: x\n\ncontainer:\n  runtime: docker\n")
    assert "  container.image (line 3): Field required" in lines


# ---------------------------------------------------------------- numbers past 64 bits


def test_a_number_past_64_bits_names_the_keys_bound():
    lines = problems("train:\n  epochs: 100000000000000000000000\n")
    assert "  train.epochs (line 2): Input should be less than or equal to 1000000000" in lines


@pytest.mark.parametrize("text, key", [
    ("resources:\n  gpus_per_node: 1.0e+25\n", "resources.gpus_per_node (line 2)"),  # a count or `all`
    ("slurm:\n  extra:\n    nice: 1.0e+25\n", "slurm.extra.nice (line 3)"),  # any sbatch option
])
def test_a_number_past_64_bits_where_there_is_no_single_bound_says_to_give_a_smaller_one(text, key):
    assert f"  {key}: Input should be a smaller number" in problems(text)


# ---------------------------------------------------------------- overrides (no lines: not from a file)


def test_a_bad_command_line_override_names_the_key_and_no_line():
    with pytest.raises(UserError) as info:
        apply_overrides(Spec(), {"resources.nodes": 0})
    lines = str(info.value).splitlines()
    assert lines[0] == "command-line options: invalid spec (1 problem)"
    assert lines[1] == "  resources.nodes: Input should be greater than or equal to 1"


def test_a_bad_variable_names_every_hpcgpu_variable_that_was_set():
    overrides = env_overrides({"HPCGPU_NODES": "0", "HPCGPU_NPROC": "2", "HPCGPU_SECRET_ENV": "SITE_ID", "OTHER": "x"})
    with pytest.raises(UserError) as info:
        apply_overrides(Spec(), overrides)
    assert str(info.value).splitlines()[0] == (
        "environment variables (HPCGPU_NODES, HPCGPU_NPROC, HPCGPU_SECRET_ENV): invalid spec (1 problem)")


def test_the_variables_set_are_listed_in_order():
    found = env_overrides({"HPCGPU_QOS": "high", "HPCGPU_NAME": "job", "HPCGPU_ACCOUNT": "", "HPCGPU_SECRET_ENV": "A"})
    assert found.variables == ("HPCGPU_NAME", "HPCGPU_QOS", "HPCGPU_SECRET_ENV")
    assert dict(found) == {"name": "job", "slurm.qos": "high", "secret_env": ["A"]}


def test_an_override_replaces_a_list():
    spec = parse_spec("entry:\n  script: train.py\n  args: [--old]\n")
    assert apply_overrides(spec, {"entry.args": ["--new"]}).entry.args == ["--new"]


def test_secret_env_overrides_add_to_the_specs_list():
    spec = parse_spec("secret_env: [B]\n")
    assert apply_overrides(spec, {"secret_env": ["A", "B"]}).secret_env == ["B", "A"]


def test_an_override_can_fill_a_section_the_spec_left_unset():
    spec = Spec()
    assert spec.container is None
    got = apply_overrides(spec, {"container.image": "img.sif", "container.runtime": "apptainer"})
    assert got.container.image == "img.sif" and got.container.runtime == "apptainer"


# ---------------------------------------------------------------- files that cannot be read


def test_a_missing_spec_file_says_how_to_give_or_make_one(tmp_path):
    with pytest.raises(UserError) as info:
        load_spec(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)
    assert info.value.hint == "pass -f PATH, or run `hpcgpu init` to write one"


def test_a_spec_file_of_exactly_the_size_bound_is_read(tmp_path, monkeypatch):
    from hpcgpu.host import spec as spec_module

    monkeypatch.setattr(spec_module, "MAX_SPEC_BYTES", 100)  # small: a 1 MiB file takes seconds to scan
    path = tmp_path / "big.yaml"
    text = "name: big\n"
    path.write_text(text + "#" * (100 - len(text) - 1) + "\n")
    assert path.stat().st_size == 100
    assert load_spec(path)[0].name == "big"


def test_a_spec_file_over_1_mib_names_the_file_and_says_what_belongs_in_it(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("#" * 1_048_577)
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and "1048577 bytes" in str(info.value)
    assert info.value.hint == "is this the spec? data belongs in files the task reads"


def test_a_spec_file_that_is_not_utf8_names_the_file_and_says_to_save_it_as_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: K\xf6ln\n".encode("latin-1"))
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert info.value.hint == "save the spec as UTF-8"


def test_an_invalid_spec_file_names_the_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("resources:\n  nodes: 0\n")
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert str(info.value).splitlines()[0] == f"{path}: invalid spec (1 problem)"
