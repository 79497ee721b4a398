"""Every registered backend keeps the Backend protocol: the same methods, a plan that round-trips
through plan.json, states as RunState, a node half. A new backend is added to REGISTRY and passes
this file unchanged (tests/helpers/dummy_backend.py is one, registered here the way docs say)."""

from __future__ import annotations

import inspect
import json

import pytest

from hpcgpu import backends
from hpcgpu.backends import Backend, LaunchHandle, RunStatus, get_backend, node_facts
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.node import NodeFacts
from hpcgpu.contract.plan import Plan, plan_from_dict
from hpcgpu.contract.runfiles import write_result
from hpcgpu.contract.states import RunState
from hpcgpu.host.runs import RunRecord
from hpcgpu.host.spec import parse_spec
from tests.helpers.plans import facts

SPEC = "resources: {gpus_per_node: 0, procs_per_node: 2}\nname: conf\n"


@pytest.fixture(params=sorted([*backends.REGISTRY, "dummy"]))
def backend(request, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "dummy", "tests.helpers.dummy_backend:DummyBackend")
    monkeypatch.setitem(backends.NODE_HALVES, "dummy", "tests.helpers.dummy_backend")
    return get_backend(request.param)


def test_it_implements_the_protocol_with_the_protocols_signatures(backend):
    assert isinstance(backend, Backend) and backend.name in backends.REGISTRY
    for method in ("plan", "preflight", "launch", "status", "describe", "cancel"):
        want = list(inspect.signature(getattr(Backend, method)).parameters)
        got = list(inspect.signature(getattr(type(backend), method)).parameters)
        assert got == want, f"{backend.name}.{method}{got} differs from the protocol's {want}"


def test_its_plan_is_complete_and_round_trips_through_plan_json(backend, tmp_path):
    run_dir = str(tmp_path / "runs" / "conf-1")
    plan = backend.plan(parse_spec(SPEC), facts(cwd=str(tmp_path)), run_id="conf-1", run_dir=run_dir, created=1.5)
    assert isinstance(plan, Plan) and plan.backend == backend.name and plan.run_dir == run_dir
    assert [(r.device, r.backend) for r in plan.ranks] == [("cpu", "gloo")] * 2
    assert plan.node_argv[-2:] == ("--plan", f"{run_dir}/plan.json")
    assert plan_from_dict(json.loads(plan.to_json())) == plan
    assert plan.created == 1.5 and "conf-1" in backend.describe(plan)
    # a node of this backend knows where it sits from the plan and its environment alone
    node = node_facts(plan, {})
    assert isinstance(node, NodeFacts) and node.node_rank == 0 and node.nnodes == 1


def test_bad_requests_are_user_errors_at_plan_time(backend):
    with pytest.raises(UserError):
        backend.plan(parse_spec("train: {precision: fp16}\nresources: {gpus_per_node: 0}\n"), facts(),
                     run_id="x", run_dir="/runs/x")


def test_status_is_a_run_state_read_from_the_run_dir_once_it_ended(backend, tmp_path):
    record = RunRecord(id="conf-1", run_dir=str(tmp_path), backend=backend.name, created=0.0, pid=None)
    for code, state in ((0, RunState.DONE), (75, RunState.STOPPED), (1, RunState.FAILED)):
        write_result(tmp_path, code)
        status = backend.status(record)
        assert isinstance(status, RunStatus) and status.state is state


def test_the_dummy_backend_launches_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setitem(backends.REGISTRY, "dummy", "tests.helpers.dummy_backend:DummyBackend")
    dummy = get_backend("dummy")
    plan = dummy.plan(parse_spec(SPEC), facts(), run_id="d-1", run_dir=str(tmp_path))
    assert dummy.launch(plan, {}) == LaunchHandle(run_id="d-1", exit_code=0)


def test_an_unknown_backend_names_the_known_ones():
    with pytest.raises(UserError, match="unknown backend 'nope'") as info:
        get_backend("nope")
    assert "local" in info.value.hint and "slurm" in info.value.hint
