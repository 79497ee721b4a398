"""contract.plan's refusals say what is wrong and what to do (a node agent reading a plan.json it
cannot use), and a plan is frozen all the way down."""

from __future__ import annotations

import json

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import load_plan, plan_from_dict, rank_devices
from tests.helpers.plans import plan_for


def test_a_missing_plan_names_the_os_reason_and_who_writes_plans(tmp_path):
    missing = tmp_path / "plan.json"
    with pytest.raises(UserError) as info:
        load_plan(missing)
    assert info.value.message == f"cannot read the plan {missing}: No such file or directory"
    assert info.value.hint == "node agents run a plan written by `hpcgpu run local` or `hpcgpu submit slurm`"


def test_a_plan_of_another_format_says_to_plan_again_with_this_version():
    with pytest.raises(UserError) as info:
        plan_from_dict({"format": 99})
    assert "found 99" in info.value.message
    assert info.value.hint == "the run was planned by another hpcgpu version: plan it again with this one"


def test_a_plan_missing_fields_says_to_plan_the_run_again():
    data = json.loads(plan_for("").to_json())
    del data["env"], data["ranks"]
    with pytest.raises(UserError) as info:
        plan_from_dict(data)
    assert info.value.message == "the plan lacks env, ranks"
    assert info.value.hint == "plan the run again (hpcgpu run/submit)"


def test_a_plan_with_non_ascii_text_is_read_as_utf8(tmp_path):
    data = json.loads(plan_for("env: {GREETING: grüße}\n").to_json())
    (tmp_path / "plan.json").write_bytes(json.dumps(data, ensure_ascii=False).encode("utf-8"))
    assert load_plan(tmp_path).env["GREETING"] == "grüße"


def test_every_mapping_in_a_plan_is_read_only():
    plan = plan_for("env: {A: b}\n")
    for mapping in (plan.env, plan.request, plan.spec, plan.spec["resources"]):
        with pytest.raises(TypeError):
            mapping["x"] = 1  # type: ignore[index]
    assert isinstance(plan.spec["entry"]["args"], tuple)
    assert plan.to_dict()["spec"]["entry"]["args"] == []  # back to plain JSON data


def test_rank_devices_one_node_of_two_gpus():
    got = [(r.rank, r.node, r.local_rank, r.device, r.backend) for r in rank_devices(1, 2, "cuda", "nccl")]
    assert got == [(0, 0, 0, "cuda:0", "nccl"), (1, 0, 1, "cuda:1", "nccl")]


def test_a_node_with_an_ascii_locale_reads_a_non_ascii_plan(tmp_path):
    # compute nodes and containers often run with LANG/LC_ALL=C: plan.json is UTF-8 whatever the locale
    import os
    import subprocess
    import sys

    data = json.loads(plan_for("env: {GREETING: grüße}\n").to_json())
    (tmp_path / "plan.json").write_bytes(json.dumps(data, ensure_ascii=False).encode("utf-8"))
    code = "import sys; from hpcgpu.contract.plan import load_plan; print(ascii(load_plan(sys.argv[1]).env['GREETING']))"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ascii("grüße")
