"""hpcgpu's adjustments to torch elastic (agent/elastic.py) against the installed torch: each patch
applies once and does what it says; LaunchConfig fields are used where they exist, the environment
variables older torch reads where they do not (warned once); a missing attribute changes nothing."""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any, Optional

import pytest
from torch.distributed.elastic.agent.server.api import RunResult, WorkerState
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing.api import PContext
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler
from torch.distributed.launcher import api as launcher_api

from hpcgpu.agent import elastic


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """warn_once remembers per process: each test starts with nothing warned."""
    monkeypatch.setattr(elastic, "_warned", set())


def unpatched(function):
    """The torch function under hpcgpu's patch, if another test in this process applied it."""
    while getattr(function, "_hpcgpu", False):
        cells = dict(zip(function.__code__.co_freevars, (c.cell_contents for c in function.__closure__)))
        function = cells["original"]
    return function


FIELDS = dict(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="r-0", role="hpcgpu",
              rdzv_endpoint="127.0.0.1:0", rdzv_backend="hpcgpu", rdzv_configs={"is_host": True},
              max_restarts=0, monitor_interval=0.1)


# ---------------------------------------------------------------- launch_config


def test_launch_config_sets_the_fields_this_torch_has(capsys):
    environ: dict = {}
    config = elastic.launch_config(environ, **FIELDS, shutdown_timeout=17)
    assert isinstance(config, launcher_api.LaunchConfig)
    assert config.signals_to_handle == elastic.FORWARDED_SIGNALS
    assert "SIGUSR1" in config.signals_to_handle and "SIGUSR2" in config.signals_to_handle
    assert config.shutdown_timeout == 17
    assert (config.nproc_per_node, config.run_id, config.rdzv_backend) == (2, "r-0", "hpcgpu")
    assert environ == {} and capsys.readouterr().err == ""


def test_launch_config_drops_fields_this_torch_does_not_know():
    config = elastic.launch_config({}, **FIELDS, shutdown_timeout=3, field_from_the_future=1)
    assert not hasattr(config, "field_from_the_future")


@dataclasses.dataclass
class OldLaunchConfig:
    """LaunchConfig of a torch before 2.8: no signals_to_handle, no shutdown_timeout."""

    min_nodes: int
    max_nodes: int
    nproc_per_node: int
    run_id: str = ""
    role: str = "default_role"
    rdzv_endpoint: str = ""
    rdzv_backend: str = "etcd"
    rdzv_configs: dict = dataclasses.field(default_factory=dict)
    max_restarts: int = 3
    monitor_interval: float = 0.1


def test_an_older_torch_gets_the_environment_fallbacks_and_one_warning(monkeypatch, capsys):
    monkeypatch.setattr(launcher_api, "LaunchConfig", OldLaunchConfig)
    environ: dict = {"KEEP": "1"}
    config = elastic.launch_config(environ, **FIELDS, shutdown_timeout=42)
    assert isinstance(config, OldLaunchConfig) and config.nproc_per_node == 2
    assert environ == {"KEEP": "1", "TORCHELASTIC_SIGNALS_TO_HANDLE": elastic.FORWARDED_SIGNALS,
                       "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "42"}
    elastic.launch_config({}, **FIELDS, shutdown_timeout=42)
    err = capsys.readouterr().err
    assert err.count("hpcgpu: warning:") == 1
    assert "LaunchConfig.signals_to_handle" in err and "TORCHELASTIC_SIGNALS_TO_HANDLE" in err


# ---------------------------------------------------------------- _patch


def test_patch_on_an_owner_without_the_attribute_warns_once_and_changes_nothing(capsys):
    owner = types.SimpleNamespace(other=1)
    for _ in range(2):
        elastic._patch(owner, "missing", lambda original: (lambda: None), "Owner.missing", "what the run loses")
    assert vars(owner) == {"other": 1}
    err = capsys.readouterr().err
    assert err.count("hpcgpu: warning:") == 1 and "has no Owner.missing; what the run loses" in err


def test_patch_replaces_once():
    def original():
        return "original"

    owner = types.SimpleNamespace(f=original)
    made = []

    def make(orig):
        made.append(orig)

        def patched():
            return "patched " + orig()
        return patched

    elastic._patch(owner, "f", make, "Owner.f", "lost")
    first = owner.f
    elastic._patch(owner, "f", make, "Owner.f", "lost")
    assert owner.f is first and first._hpcgpu is True and made == [original]
    assert owner.f() == "patched original"


# ---------------------------------------------------------------- the process-wide patches


def test_the_installed_torch_has_what_the_patches_replace():
    close = unpatched(PContext.close)
    assert list(inspect.signature(close).parameters)[:3] == ["self", "death_sig", "timeout"]
    monitor = unpatched(LocalElasticAgent._monitor_workers)
    assert list(inspect.signature(monitor).parameters) == ["self", "worker_group"]
    assert {"state", "failures"} <= {f.name for f in dataclasses.fields(RunResult)}


def test_failure_teardown_waits_failure_grace_s_and_applies_once(monkeypatch, capsys):
    calls = []

    def close(self, death_sig=None, timeout=30):
        calls.append((self, death_sig, timeout))

    monkeypatch.setattr(PContext, "close", close)
    elastic.limit_failure_teardown()
    patched = PContext.close
    elastic.limit_failure_teardown()
    assert PContext.close is patched and patched._hpcgpu is True
    ctx = object()
    PContext.close(ctx)
    PContext.close(ctx, "SIGKILL", 60)  # an explicit timeout (the stop path) is left alone
    assert calls == [(ctx, None, elastic.FAILURE_GRACE_S), (ctx, "SIGKILL", 60)]
    assert elastic.FAILURE_GRACE_S < 30 and capsys.readouterr().err == ""


def fake_agent(remaining: int = 3):
    return types.SimpleNamespace(_remaining_restarts=remaining)


def result(state, *codes) -> Any:
    return RunResult(state=state, failures={i: types.SimpleNamespace(exitcode=c) for i, c in enumerate(codes)})


@pytest.fixture
def monitor(monkeypatch):
    """LocalElasticAgent._monitor_workers replaced by one returning .next, then patched by hpcgpu."""
    box = types.SimpleNamespace(next=None)

    def original(self, worker_group):
        return box.next

    monkeypatch.setattr(LocalElasticAgent, "_monitor_workers", original)
    elastic.make_clean_stops_final()
    patched = LocalElasticAgent._monitor_workers
    elastic.make_clean_stops_final()
    assert LocalElasticAgent._monitor_workers is patched and patched._hpcgpu is True
    return box


def test_a_group_that_stopped_cleanly_is_not_restarted(monitor):
    agent = fake_agent()
    monitor.next = result(WorkerState.FAILED, 75, 75)
    assert LocalElasticAgent._monitor_workers(agent, None) is monitor.next
    assert agent._remaining_restarts == 0


@pytest.mark.parametrize("state, codes", [
    (WorkerState.FAILED, (75, 1)),  # one rank really failed: torch restarts as configured
    (WorkerState.FAILED, (1,)),
    (WorkerState.FAILED, ()),
    (WorkerState.SUCCEEDED, ()),
    (WorkerState.HEALTHY, ()),
])
def test_other_outcomes_keep_their_restarts(monitor, monkeypatch, state, codes):
    agent = fake_agent()
    reports = []
    monkeypatch.setattr(elastic, "_on_restart", lambda *args: reports.append(args))
    monitor.next = result(state, *codes)
    group = types.SimpleNamespace(spec=types.SimpleNamespace(max_restarts=3))
    assert LocalElasticAgent._monitor_workers(agent, group) is monitor.next
    assert agent._remaining_restarts == 3
    # a failure torch elastic is about to restart is reported as attempt 1 of 4 (3 restarts left)
    expected = [(monitor.next.failures, 1, 4)] if state == WorkerState.FAILED else []
    assert reports == expected


def test_the_last_attempt_s_failure_is_not_reported_as_a_restart(monitor, monkeypatch):
    agent = fake_agent()
    agent._remaining_restarts = 0
    reports = []
    monkeypatch.setattr(elastic, "_on_restart", lambda *args: reports.append(args))
    monitor.next = result(WorkerState.FAILED, 1)
    LocalElasticAgent._monitor_workers(agent, types.SimpleNamespace(spec=types.SimpleNamespace(max_restarts=3)))
    assert reports == []


def test_adjust_torch_elastic_applies_both_patches(monkeypatch):
    monkeypatch.setattr(PContext, "close", lambda self, death_sig=None, timeout=30: None)
    monkeypatch.setattr(LocalElasticAgent, "_monitor_workers", lambda self, wg: None)
    monkeypatch.setattr(elastic, "quiet_elastic_logs", lambda: None)  # process-wide logger levels: not here
    elastic.adjust_torch_elastic()
    assert PContext.close._hpcgpu and LocalElasticAgent._monitor_workers._hpcgpu


# ---------------------------------------------------------------- per-handler adjustments


class Handler:
    """The private parts of DynamicRendezvousHandler the adjustments use."""

    def __init__(self):
        self.joins = 0
        self._shared_tcp_store_server: Optional[object] = "old store"
        self._bootstrap_store_info: Optional[object] = "old info"

    def _create_tcp_store_server(self, addr, port):
        return "torch's store"

    def next_rendezvous(self):
        self.joins += 1
        return (self.joins, self._shared_tcp_store_server, getattr(self, "_bootstrap_store_info", "absent"))


def test_the_installed_torch_handler_has_the_private_parts():
    assert hasattr(DynamicRendezvousHandler, "_create_tcp_store_server")
    init = inspect.getsource(DynamicRendezvousHandler.__init__)
    assert "self._shared_tcp_store_server" in init and "self._bootstrap_store_info" in init


def test_bind_rank_store_replaces_the_store_factory(capsys):
    handler = Handler()
    made = []

    def make_store(addr, port):
        made.append((addr, port))
        return "loopback store"

    elastic.bind_rank_store(handler, make_store)
    assert handler._create_tcp_store_server("10.0.0.1", 29500) == "loopback store"
    assert made == [("10.0.0.1", 29500)] and capsys.readouterr().err == ""


def test_bind_rank_store_without_the_factory_warns_once(capsys):
    handler = types.SimpleNamespace()
    elastic.bind_rank_store(handler, lambda a, p: None)
    elastic.bind_rank_store(handler, lambda a, p: None)
    assert vars(handler) == {}
    err = capsys.readouterr().err
    assert err.count("hpcgpu: warning:") == 1 and "_create_tcp_store_server" in err and "every interface" in err


def test_fresh_rank_store_per_attempt_forgets_the_store_before_each_join():
    handler = Handler()
    elastic.fresh_rank_store_per_attempt(handler)
    assert handler.next_rendezvous() == (1, None, None)
    handler._shared_tcp_store_server, handler._bootstrap_store_info = "attempt 1", "info 1"
    assert handler.next_rendezvous() == (2, None, None)


def test_fresh_rank_store_per_attempt_leaves_a_handler_without_a_shared_store_alone(capsys):
    handler = Handler()
    del handler._bootstrap_store_info
    elastic.fresh_rank_store_per_attempt(handler)
    assert "next_rendezvous" not in vars(handler)  # still the class's own method
    assert handler.next_rendezvous() == (1, "old store", "absent")
    assert capsys.readouterr().err == ""
