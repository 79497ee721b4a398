"""contract.runfiles: how files in a run directory are written (atomic, private, UTF-8, readable JSON),
what a failed write reports, and the restart count the node agent keeps across launches."""

from __future__ import annotations

import errno
import json
import os

import pytest

from hpcgpu.contract.runfiles import (RESTARTS_FILE, RESULT_FILE, count_elastic_restart, elastic_restarts,
                                      write_json_atomic, write_private_text, write_result)


def test_private_text_is_written_as_utf8(tmp_path):
    target = tmp_path / "note.txt"
    write_private_text(target, "grüße ✓\n")
    assert target.read_bytes() == "grüße ✓\n".encode("utf-8")


def test_private_text_replaces_a_longer_file_completely(tmp_path):
    target = tmp_path / "note.txt"
    target.write_text("a much longer earlier content\n")
    write_private_text(target, "short\n")
    assert target.read_text() == "short\n"


def test_a_failed_write_names_the_file_asked_for_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.mkdir()  # a directory in the way: the final rename fails
    (target / "keep").write_text("x")
    with pytest.raises(OSError) as info:
        write_private_text(target, "{}\n")
    assert info.value.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert isinstance(info.value, type(OSError(info.value.errno, "")))  # same OSError subclass as the cause
    assert info.value.filename == str(target)
    assert info.value.strerror == os.strerror(info.value.errno)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_json_files_are_indented_sorted_and_end_with_a_newline(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"b": 1, "a": {"d": 2, "c": 3}})
    assert target.read_text() == '{\n  "a": {\n    "c": 3,\n    "d": 2\n  },\n  "b": 1\n}\n'


def test_result_json_holds_the_exit_code_and_when_it_ended(tmp_path):
    write_result(str(tmp_path), 75)
    data = json.loads((tmp_path / RESULT_FILE).read_text())
    assert set(data) == {"exit_code", "ended"} and data["exit_code"] == 75 and data["ended"] > 1.7e9


def test_restarts_count_up_from_zero_across_calls(tmp_path):
    assert elastic_restarts(tmp_path) == 0
    assert count_elastic_restart(tmp_path) == 1
    assert count_elastic_restart(str(tmp_path)) == 2
    assert elastic_restarts(str(tmp_path)) == 2
    data = json.loads((tmp_path / RESTARTS_FILE).read_text())
    assert data["restarts"] == 2 and data["time"] > 1.7e9


def test_restarts_file_read_back(tmp_path):
    (tmp_path / RESTARTS_FILE).write_text('{"restarts": 3}')
    assert elastic_restarts(tmp_path) == 3
    (tmp_path / RESTARTS_FILE).write_text('{"restarts": null}')
    assert elastic_restarts(tmp_path) == 0
    (tmp_path / RESTARTS_FILE).write_text('{}')
    assert elastic_restarts(tmp_path) == 0
    (tmp_path / RESTARTS_FILE).write_text('{half')
    assert elastic_restarts(tmp_path) == 0


def test_private_text_is_utf8_under_an_ascii_locale_too(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "note.txt"
    code = "import sys; from pathlib import Path; from hpcgpu.contract.runfiles import write_private_text; " \
           "write_private_text(Path(sys.argv[1]), 'gr\\u00fc\\u00dfe')"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code, str(target)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert target.read_bytes() == "grüße".encode("utf-8")


def test_run_files_are_written_as_utf8_whatever_the_locale(tmp_path):
    # spec.yaml and friends may hold non-ASCII text (an env value, a path); a node whose locale is C
    # (ASCII once Python's coercion and UTF-8 mode are off) must still write them, as UTF-8
    import subprocess
    import sys

    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    code = ("import sys; from pathlib import Path; from hpcgpu.contract.runfiles import write_private_text; "
            "write_private_text(Path(sys.argv[1]), 'caf\\u00e9')")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.txt")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "f.txt").read_bytes() == "café".encode("utf-8")
