"""`--set KEY=VALUE` (issue 13, item 4): any spec key, typed by YAML, validated with the whole spec;
precedence spec file < HPCGPU_* variables < --set < the dedicated flags."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hpcgpu.cli import cli
from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import parse_set_options


def test_values_are_typed_like_yaml():
    assert parse_set_options(["train.lr=0.0003", "train.epochs=5", "entry.args=[--x, '1']", "name=job",
                              "logging.tensorboard=false", "env.EMPTY="]) == {
        "train.lr": 0.0003, "train.epochs": 5, "entry.args": ["--x", "1"], "name": "job",
        "logging.tensorboard": False, "env.EMPTY": ""}


def test_only_the_first_equals_sign_splits():
    assert parse_set_options(["env.OPTS=a=b"]) == {"env.OPTS": "a=b"}


@pytest.mark.parametrize("item", ["noequals", "=3", "train..lr=1", ".lr=1", "train lr=1", "train.lr"])
def test_a_malformed_item_is_refused_naming_it(item):
    with pytest.raises(UserError) as info:
        parse_set_options([item])
    assert repr(item) in info.value.message and "KEY=VALUE" in info.value.message


def test_anchors_and_aliases_are_refused():
    with pytest.raises(UserError, match="anchors and aliases"):
        parse_set_options(["entry.args=[&a x, *a]"])


def test_a_value_over_4096_characters_is_refused():
    parse_set_options(["name=" + "a" * 4096])
    with pytest.raises(UserError, match="4097 characters, more than 4096"):
        parse_set_options(["name=" + "a" * 4097])


def dry_run(tmp_path, monkeypatch, *args, env=None):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPCGPU_HOME", str(tmp_path / "home"))
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(cli, ["run", "local", "--dry-run", "--json", *args])
    return result, (json.loads(result.output) if result.exit_code == 0 else None)


def test_set_reaches_the_plan(tmp_path, monkeypatch):
    result, plan = dry_run(tmp_path, monkeypatch, "--nproc", "2", "--set", "train.lr=3e-4", "--set", "train.epochs=5")
    assert result.exit_code == 0, result.output
    assert (plan["spec"]["train"]["lr"], plan["spec"]["train"]["epochs"]) == (0.0003, 5)


def test_precedence_file_then_environment_then_set_then_flags(tmp_path, monkeypatch):
    (tmp_path / "hpcgpu.yaml").write_text("name: from-file\nresources: {gpus_per_node: 0, procs_per_node: 4}\n")
    result, plan = dry_run(tmp_path, monkeypatch, "--set", "name=from-set", env={"HPCGPU_NAME": "from-env"})
    assert plan["spec"]["name"] == "from-set"  # --set over HPCGPU_NAME over the file
    result, plan = dry_run(tmp_path, monkeypatch, env={"HPCGPU_NAME": "from-env"})
    assert plan["spec"]["name"] == "from-env"
    result, plan = dry_run(tmp_path, monkeypatch, "--set", "resources.procs_per_node=3", "--nproc", "2")
    assert plan["nproc_per_node"] == 2  # a dedicated flag over --set
    result, plan = dry_run(tmp_path, monkeypatch, "--set", "resources.procs_per_node=3")
    assert plan["nproc_per_node"] == 3


@pytest.mark.parametrize("item, named", [("train.lrr=1", "train.lrr: unknown key"),
                                         ("train.epochs=abc", "train.epochs: Input should be a valid integer")])
def test_a_bad_key_or_value_names_the_key_and_starts_nothing(tmp_path, monkeypatch, item, named):
    result, _ = dry_run(tmp_path, monkeypatch, "--nproc", "2", "--set", item)
    assert isinstance(result.exception, UserError) and named in str(result.exception)  # `main` exits 2 on it
    assert not (tmp_path / "runs").exists()


def test_a_malformed_item_points_at_the_list_of_keys():
    with pytest.raises(UserError) as raised:
        parse_set_options(["train lr=3"])
    assert "docs/spec.md" in raised.value.hint and "hpcgpu spec show" in raised.value.hint


def test_a_value_that_is_not_yaml_says_how_to_quote_a_list():
    with pytest.raises(UserError) as raised:
        parse_set_options(["entry.args=[--lr, 3"])
    assert raised.value.message.startswith("--set entry.args: ")
    assert "quote it for your shell" in raised.value.hint and "--set 'entry.args=[--lr, \"3\"]'" in raised.value.hint
