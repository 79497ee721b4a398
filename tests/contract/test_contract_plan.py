"""plan.json: the plan survives JSON, load_plan takes a run dir or the file and says clearly what is
wrong with a bad one, and each rank's device is numbered the way the nodes expect."""

from __future__ import annotations

import json

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import PLAN_FORMAT, REDACTED, RankPlan, load_plan, plan_from_dict, rank_devices
from tests.helpers.plans import plan_for

TWO_NODES = """\
name: rt
resources: {nodes: 2, gpus_per_node: 2}
debug: {nccl: info, flight_recorder: true}
env: {WANDB_API_KEY: sekrit, MY_FLAG: '1'}
"""


def test_a_multi_node_plan_round_trips_through_json():
    plan = plan_for(TWO_NODES, backend="slurm", run_id="rt-1", run_dir="/runs/rt-1")
    back = plan_from_dict(json.loads(plan.to_json()))
    assert back == plan
    # the parts JSON would turn into lists come back as tuples of the right types
    assert isinstance(back.ranks, tuple) and all(isinstance(r, RankPlan) for r in back.ranks)
    assert isinstance(back.node_argv, tuple) and isinstance(back.env_notes, tuple)
    assert isinstance(back.container_prefix, tuple)
    # and what was written holds no secret value
    assert "sekrit" not in plan.to_json() and back.env["WANDB_API_KEY"] == REDACTED


def test_a_cpu_plan_round_trips_through_json():
    plan = plan_for("resources: {gpus_per_node: 0, procs_per_node: 3}\n")
    assert plan_from_dict(json.loads(plan.to_json())) == plan


def test_load_plan_takes_the_run_dir_or_the_file(tmp_path):
    plan = plan_for("resources: {gpus_per_node: 0}\n", run_dir=str(tmp_path))
    (tmp_path / "plan.json").write_text(plan.to_json())
    assert load_plan(tmp_path) == plan
    assert load_plan(str(tmp_path)) == plan
    assert load_plan(tmp_path / "plan.json") == plan


def test_a_missing_plan_is_a_user_error_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="cannot read the plan") as info:
        load_plan(tmp_path / "nope" / "plan.json")
    assert str(tmp_path / "nope" / "plan.json") in info.value.message
    # a run dir without plan.json names the file it looked for
    with pytest.raises(UserError, match="cannot read the plan") as info:
        load_plan(tmp_path)
    assert str(tmp_path / "plan.json") in info.value.message


def test_invalid_json_is_a_user_error(tmp_path):
    (tmp_path / "plan.json").write_text('{"format": 1, ')
    with pytest.raises(UserError, match="is not valid JSON") as info:
        load_plan(tmp_path)
    assert str(tmp_path / "plan.json") in info.value.message


def test_a_plan_of_another_format_is_refused(tmp_path):
    data = plan_for("resources: {gpus_per_node: 0}\n").to_dict()
    data["format"] = PLAN_FORMAT + 1
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=rf"not an hpcgpu plan of format {PLAN_FORMAT} \(found {PLAN_FORMAT + 1}\)") as info:
        load_plan(tmp_path)
    assert "plan it again" in info.value.hint
    del data["format"]
    with pytest.raises(UserError, match=r"\(found None\)"):
        plan_from_dict(data)


def test_json_that_is_not_an_object_is_refused_naming_its_type():
    with pytest.raises(UserError, match=r"found 'list'"):
        plan_from_dict([1, 2])  # type: ignore[arg-type]


def test_missing_fields_are_named():
    data = plan_for("resources: {gpus_per_node: 0}\n").to_dict()
    del data["ranks"], data["ckpt_dir"]
    with pytest.raises(UserError) as info:
        plan_from_dict(data)
    assert info.value.message == "the plan lacks ckpt_dir, ranks"
    assert "plan the run again" in info.value.hint


def test_device_of_each_local_rank_and_an_error_outside_the_plan():
    plan = plan_for("resources: {nodes: 2, gpus_per_node: 3}\n", backend="slurm", run_id="dv-1")
    assert [plan.device_of(i) for i in range(3)] == ["cuda:0", "cuda:1", "cuda:2"]
    for bad in (3, -1):
        with pytest.raises(UserError, match=f"no local rank {bad}") as info:
            plan.device_of(bad)
        assert "dv-1" in info.value.message and "3 rank(s) per node" in info.value.message
    cpu = plan_for("resources: {gpus_per_node: 0, procs_per_node: 2}\n")
    assert [cpu.device_of(i) for i in range(2)] == ["cpu", "cpu"]
    with pytest.raises(UserError):
        cpu.device_of(2)


def test_rank_devices_two_nodes_of_three_on_cuda():
    got = [(r.rank, r.node, r.local_rank, r.device, r.backend) for r in rank_devices(2, 3, "cuda", "nccl")]
    assert got == [
        (0, 0, 0, "cuda:0", "nccl"), (1, 0, 1, "cuda:1", "nccl"), (2, 0, 2, "cuda:2", "nccl"),
        (3, 1, 0, "cuda:0", "nccl"), (4, 1, 1, "cuda:1", "nccl"), (5, 1, 2, "cuda:2", "nccl"),
    ]


def test_rank_devices_two_nodes_of_three_on_cpu():
    got = [(r.rank, r.node, r.local_rank, r.device, r.backend) for r in rank_devices(2, 3, "cpu", "gloo")]
    assert got == [
        (0, 0, 0, "cpu", "gloo"), (1, 0, 1, "cpu", "gloo"), (2, 0, 2, "cpu", "gloo"),
        (3, 1, 0, "cpu", "gloo"), (4, 1, 1, "cpu", "gloo"), (5, 1, 2, "cpu", "gloo"),
    ]


def test_a_plan_holding_utf8_text_loads_on_a_node_whose_locale_is_ascii(tmp_path):
    # JSON is UTF-8 whatever the node's locale; batch jobs often run with LANG=C (an ASCII locale
    # once Python's C-locale coercion and UTF-8 mode are off, as on many cluster images)
    import os
    import subprocess
    import sys

    plan = plan_for("env: {GREETING: café}\nresources: {gpus_per_node: 0}\n", run_dir=str(tmp_path))
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict(), ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    code = ("import locale, sys; from hpcgpu.contract.plan import load_plan; "
            "print(locale.getpreferredencoding(False), load_plan(sys.argv[1]).env['GREETING'].encode('unicode_escape').decode())")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    encoding, name = p.stdout.split()
    assert encoding.lower() in ("ansi_x3.4-1968", "ascii", "us-ascii")  # the locale really is ASCII
    assert name == "caf\\xe9"
