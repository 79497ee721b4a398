"""An unknown option before the script is Click's usual error naming it (issue 13, item 5): it used
to be taken for the script ("entry.script '--bogus-flag' not found")."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hpcgpu.cli import cli as main


@pytest.mark.parametrize("argv, named, suggestion", [
    (["run", "local", "--nproc", "2", "--bogus-flag"], "--bogus-flag", None),
    (["run", "local", "--nprc", "2"], "--nprc", "--nproc"),
    (["submit", "slurm", "--gpus-per-nod", "8"], "--gpus-per-nod", "--gpus-per-node"),
])
def test_an_unknown_option_is_a_usage_error_naming_it(tmp_path, monkeypatch, argv, named, suggestion):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert f"No such option '{named}'" in result.output and "entry.script" not in result.output
    if suggestion:  # Click's "Did you mean '--nproc'?" or "(Did you mean one of: ..., '--gpus-per-node', ...?)"
        assert "Did you mean" in result.output and f"'{suggestion}'" in result.output


@pytest.mark.parametrize("command, entry", [
    (["train.py", "--lr", "3"], "script train.py --lr 3"),  # options after the script are the script's
    (["--", "train.py", "--nproc", "9"], "script train.py --nproc 9"),
    (["--", "-m", "pkg.mod", "--x"], "module pkg.mod --x"),
])
def test_words_after_the_script_or_dash_dash_belong_to_the_entry(tmp_path, monkeypatch, command, entry):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPCGPU_HOME", str(tmp_path / "home"))
    (tmp_path / "train.py").write_text("")
    result = CliRunner().invoke(main, ["run", "local", "--nproc", "1", "--dry-run", *command])
    assert result.exit_code == 0, result.output
    assert f"entry:    {entry}" in result.output
