"""Spec loading is bounded: no YAML can make hpcgpu exhaust memory or time, and bytes that are not
text are a clear error (exit 2 through the CLI), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import MAX_SPEC_BYTES, MAX_SPEC_NODES, load_spec, parse_spec

#: "billion laughs": 342 bytes that expand to 10^9 list items through nested aliases
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))


def test_billion_laughs_is_refused_at_the_first_anchor():
    with pytest.raises(UserError, match="anchors and aliases") as info:
        parse_spec(LAUGHS)
    assert "line 1" in str(info.value) and "write the value out" in info.value.hint


def test_an_alias_inside_task_args_is_refused_too():
    text = "entry:\n  task: hpcgpu.examples.mlp:make_task\n  task_args: {n_samples: 512}\nname: &n x\nlogging: {dir: *n}\n"
    with pytest.raises(UserError, match="anchors and aliases"):
        parse_spec(text)


def test_too_many_values_are_refused():
    keys = "".join(f"  k{i}: 1\n" for i in range(MAX_SPEC_NODES))
    assert len(keys) < MAX_SPEC_BYTES  # small enough in bytes: the value count is what refuses it
    with pytest.raises(UserError, match=f"more than {MAX_SPEC_NODES} values"):
        parse_spec("entry:\n  task: m:f\n  task_args:\n" + keys)


def test_a_file_over_the_size_bound_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_SPEC_BYTES + "\n")
    with pytest.raises(UserError, match=r"is \d+ bytes: a spec may have at most 1048576"):
        load_spec(big)


def test_non_utf8_bytes_name_the_byte_and_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: ok\nenv: {CITY: 'K\xf6ln'}\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"not UTF-8 text: byte 23 \(line 2\) is 0xf6"):
        load_spec(bad)


def test_the_cli_says_so_with_exit_2_and_creates_nothing(tmp_path):
    (tmp_path / "laughs.yaml").write_text(LAUGHS)
    env = {**os.environ, "HPCGPU_HOME": str(tmp_path / "home")}
    for args in (["spec", "validate", "-f", "laughs.yaml"], ["run", "local", "-f", "laughs.yaml", "--dry-run"]):
        out = subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and "anchors and aliases" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()
