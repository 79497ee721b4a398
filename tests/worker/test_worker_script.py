"""The user's script runs in the rank as under `python train.py` / torchrun (issue 13, item 1)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from hpcgpu.worker.script import run_script, script_sys_path

PROBE = """
import json, os, pickle, sys
class Point:
    def __init__(self, x): self.x = x
back = pickle.loads(pickle.dumps(Point(3)))  # a class of the script pickles as __main__.Point
json.dump({"argv": sys.argv, "file": __file__, "name": __name__, "path0": sys.path[0],
           "dir_count": sys.path.count(os.path.dirname(os.path.abspath(__file__))), "x": back.x},
          open(os.environ["PROBE_OUT"], "w"))
"""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])  # as `python -m hpcgpu.worker` starts
    monkeypatch.setenv("PROBE_OUT", str(tmp_path / "probe.json"))
    return tmp_path


@pytest.mark.parametrize("typed", ["train.py", "./train.py", "sub/train.py"])
def test_the_script_sees_argv_0_as_typed_and_its_own_directory_first_once(in_tmp, typed):
    (in_tmp / "sub").mkdir()
    (in_tmp / typed).write_text(PROBE)
    main_before = sys.modules["__main__"]
    run_script(typed, ["--lr", "3"])
    seen = json.loads((in_tmp / "probe.json").read_text())
    assert seen["argv"] == [typed, "--lr", "3"]  # torchrun: sys.argv[0] is the path as typed
    assert seen["file"] == str(in_tmp / typed.removeprefix("./"))  # __file__ absolute, as Python 3.9+
    assert seen["name"] == "__main__" and seen["x"] == 3
    assert seen["path0"] == os.path.dirname(str(in_tmp / typed.removeprefix("./")))
    assert seen["dir_count"] == 1
    assert sys.modules["__main__"] is main_before  # the worker's own __main__ is back afterwards


def test_a_script_in_a_subdirectory_does_not_see_the_working_directory_on_sys_path(in_tmp):
    # `python sub/train.py` puts sub/ first and not the working directory
    assert script_sys_path([str(in_tmp), "/lib"], str(in_tmp / "sub"), str(in_tmp)) == [str(in_tmp / "sub"), "/lib"]
    assert script_sys_path(["", "/lib"], str(in_tmp / "sub"), str(in_tmp)) == [str(in_tmp / "sub"), "/lib"]


def test_a_first_entry_that_is_not_the_working_directory_is_kept(in_tmp):
    # e.g. under PYTHONSAFEPATH nothing was put first: nothing of the user's may be dropped
    assert script_sys_path(["/lib", "/other"], "/scripts", str(in_tmp)) == ["/scripts", "/lib", "/other"]
    assert script_sys_path(["/scripts", "/lib"], "/scripts", "/elsewhere") == ["/scripts", "/lib"]


def test_sys_exit_in_the_script_reaches_the_worker(in_tmp):
    (in_tmp / "bye.py").write_text("import sys\nsys.exit(75)\n")
    with pytest.raises(SystemExit) as info:
        run_script("bye.py", [])
    assert info.value.code == 75


def test_entry_words_show_the_users_command_on_the_ranks_command_line():
    from hpcgpu.agent.node import entry_words

    assert entry_words({"script": "train.py", "args": ["--lr", "3"]}) == ("train.py", "--lr", "3")
    assert entry_words({"module": "pkg.train", "args": ["a"]}) == ("-m", "pkg.train", "a")
    assert entry_words({"task": "hpcgpu.examples.mlp:make_task", "args": []}) == ("hpcgpu.examples.mlp:make_task",)
    assert entry_words({"args": []}) == ()
