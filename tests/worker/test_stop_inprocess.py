"""Stop requests in one process, without subprocesses: the signal handler's decisions (remember the
first signal, say so once, a second SIGINT exits 130, scripts that never poll keep the usual
effects), install(), should_stop's agreement, the collective's device and the DataLoader worker
shield. Process-wide state (the module's globals, signal handlers, torch's worker hook) is saved
and restored around every test. (The same through real signals and processes: test_worker_stop.py.)"""

from __future__ import annotations

import os
import signal
import threading
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as tdist
from torch.utils.data._utils import signal_handling

from hpcgpu.worker import stop

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


@pytest.fixture(autouse=True)
def clean_stop_state():
    saved = {name: getattr(stop, name) for name in ("_requested", "_sigints", "_main_pid", "_cooperative")}
    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    hook = signal_handling._set_worker_signal_handlers
    stop._requested, stop._sigints, stop._main_pid, stop._cooperative = None, 0, os.getpid(), True
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    signal_handling._set_worker_signal_handlers = hook
    for name, value in saved.items():
        setattr(stop, name, value)


class Exited(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


class FakeOs:
    """The real os module, except that _exit raises Exited and kill is recorded."""

    def __init__(self):
        self.killed = []

    def __getattr__(self, name):
        return getattr(os, name)

    def _exit(self, code):
        raise Exited(code)

    def kill(self, pid, sig):
        self.killed.append((pid, sig))


@pytest.fixture(autouse=True)
def fake_os(monkeypatch):
    """Every test: the handler never really kills or exits this process."""
    fake = FakeOs()
    monkeypatch.setattr(stop, "os", fake)
    return fake


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT])
def test_a_stop_signal_asks_for_a_stop_named_after_it_and_says_so(sig, capfd, fake_os):
    stop._handle(sig, None)
    assert fake_os.killed == []  # the default action is for scripts that never poll
    name = signal.Signals(sig).name
    assert stop.requested() == name
    assert capfd.readouterr().err == f"hpcgpu: {name} received: stopping at the next step boundary with a checkpoint\n"


def test_repeated_signals_keep_the_first_reason_and_say_nothing_more(capfd):
    stop._handle(signal.SIGUSR1, None)
    capfd.readouterr()
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGUSR1, None)
    assert stop.requested() == "SIGUSR1"
    assert capfd.readouterr().err == ""


def test_a_forked_loader_worker_ignores_the_signal(capfd):
    stop._main_pid = os.getpid() + 1  # as in a worker forked from the rank
    stop._handle(signal.SIGTERM, None)
    assert stop.requested() is None and capfd.readouterr().err == ""


def test_a_second_sigint_exits_130_at_once_without_a_checkpoint(fake_os, capfd):
    stop._handle(signal.SIGINT, None)
    assert stop.requested() == "SIGINT"
    with pytest.raises(Exited) as exited:
        stop._handle(signal.SIGINT, None)
    assert exited.value.code == 130
    assert capfd.readouterr().err.endswith("hpcgpu: second SIGINT: exiting now without a checkpoint\n")


def test_other_stop_signals_between_two_sigints_do_not_count_as_the_second(fake_os):
    stop._handle(signal.SIGINT, None)
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGUSR1, None)
    assert stop.requested() == "SIGINT"  # still running: only a second SIGINT means "now"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_script_that_never_polls_gets_the_usual_effect_of_sigterm_and_sighup(sig, fake_os, capfd):
    stop._cooperative = False
    try:
        stop._handle(sig, None)
    except KeyboardInterrupt:  # caught here: an escaping one would abort the test session
        pytest.fail(f"{signal.Signals(sig).name} must get its default action, not KeyboardInterrupt")
    assert fake_os.killed == [(os.getpid(), sig)]  # re-raised with the default action
    assert signal.getsignal(sig) == signal.SIG_DFL
    name = signal.Signals(sig).name
    assert f"hpcgpu: {name} received, but this script never calls dist.should_stop(): it keeps running" \
        in capfd.readouterr().err


def test_a_script_that_never_polls_gets_keyboardinterrupt_from_sigint(fake_os):
    stop._cooperative = False
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)
    assert fake_os.killed == []


def test_a_script_that_never_polls_is_not_killed_by_sigusr1(fake_os, capfd):
    stop._cooperative = False
    stop._handle(signal.SIGUSR1, None)
    assert fake_os.killed == []
    assert stop.requested() == "SIGUSR1"
    assert "SIGUSR1 received, but this script never calls dist.should_stop(): it keeps running" in capfd.readouterr().err


def test_install_routes_every_stop_signal_to_the_handler_once(capfd):
    stop._main_pid = None
    stop.install(cooperative=False)
    assert all(signal.getsignal(sig) is stop._handle for sig in SIGNALS)
    assert stop._main_pid == os.getpid() and stop.cooperative() is False
    assert getattr(signal_handling._set_worker_signal_handlers, "_hpcgpu", False) is True
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    stop.install(cooperative=True)  # again in the same process: nothing changes
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN and stop.cooperative() is False


def test_an_installed_handler_turns_a_real_signal_into_a_stop_request(capfd):
    stop._main_pid, stop._cooperative = None, False
    stop.install()
    assert stop.cooperative() is True  # the default: a task entry stops cooperatively
    os.kill(os.getpid(), signal.SIGUSR2)
    assert stop.requested() == "SIGUSR2"


def test_request_keeps_the_first_reason_and_reset_forgets_it():
    stop.request()
    assert stop.requested() == "requested"
    stop.request("later")
    assert stop.requested() == "requested"
    stop._sigints = 1
    stop.reset()
    assert stop.requested() is None and stop._sigints == 0
    stop.request("again")
    assert stop.requested() == "again"


def test_should_stop_without_a_process_group_is_this_ranks_request_and_makes_the_process_cooperative():
    stop._cooperative = False
    assert stop.should_stop() is False
    assert stop.cooperative() is True
    stop.request("SIGTERM")
    assert stop.should_stop() is True


class FakeGroup:
    """torch.distributed as an initialized group of ranks where other ranks say `others`."""

    def __init__(self, monkeypatch, others: int, backend: str = "gloo"):
        self.reduced = []
        self.others = others
        monkeypatch.setattr(tdist, "is_initialized", lambda: True)
        monkeypatch.setattr(tdist, "get_backend", lambda group=None: backend)
        monkeypatch.setattr(tdist, "all_reduce", self.all_reduce)

    def all_reduce(self, tensor, op=None, group=None, async_op=False):
        self.reduced.append((tensor.clone(), tensor.dtype, tensor.device, op))
        tensor.copy_(torch.maximum(tensor, torch.tensor([self.others], dtype=tensor.dtype)))


def test_should_stop_agrees_with_the_other_ranks_through_one_max_all_reduce(monkeypatch):
    group = FakeGroup(monkeypatch, others=1)
    assert stop.should_stop() is True
    assert stop.requested() == "another rank"
    ((sent, dtype, device, op),) = group.reduced
    assert sent.tolist() == [0] and dtype == torch.int32 and device == torch.device("cpu")
    assert op == tdist.ReduceOp.MAX


def test_should_stop_sends_this_ranks_request_and_keeps_its_reason(monkeypatch):
    group = FakeGroup(monkeypatch, others=0)
    stop.request("SIGUSR1")
    assert stop.should_stop(torch.device("cpu")) is True
    assert group.reduced[0][0].tolist() == [1]
    assert stop.requested() == "SIGUSR1"


def test_an_explicit_device_is_used_whatever_the_backend(monkeypatch):
    group = FakeGroup(monkeypatch, others=0, backend="nccl")  # nccl would mean the current GPU
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert stop.should_stop(torch.device("cpu")) is False
    assert group.reduced[0][2] == torch.device("cpu")


def test_should_stop_is_false_when_no_rank_asked(monkeypatch):
    FakeGroup(monkeypatch, others=0)
    assert stop.should_stop() is False
    assert stop.requested() is None


def test_the_stop_flag_goes_over_the_current_gpu_under_nccl_and_the_cpu_otherwise(monkeypatch):
    FakeGroup(monkeypatch, others=0, backend="nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert stop._collective_device() == torch.device("cuda", 3)
    FakeGroup(monkeypatch, others=0, backend="gloo")
    assert stop._collective_device() == torch.device("cpu")


def test_the_worker_shield_wraps_torchs_hook_once_and_still_runs_it(monkeypatch):
    calls = []
    monkeypatch.setattr(signal_handling, "_set_worker_signal_handlers", lambda *a, **k: calls.append((a, k)))
    served = []
    monkeypatch.setattr(stop, "_serve_through_stops", lambda: served.append(True))
    stop.shield_loader_workers()
    wrapped = signal_handling._set_worker_signal_handlers
    assert wrapped._hpcgpu is True
    stop.shield_loader_workers()
    assert signal_handling._set_worker_signal_handlers is wrapped  # not wrapped twice
    wrapped(1, 2, key="v")
    assert calls == [((1, 2), {"key": "v"})] and served == [True]


def test_a_torch_without_the_worker_hook_gets_a_warning(monkeypatch, capfd):
    monkeypatch.delattr(signal_handling, "_set_worker_signal_handlers")
    stop.shield_loader_workers()
    err = capfd.readouterr().err
    # one line, starting with the prefix every hpcgpu line has, naming the hook and the risk
    assert err.startswith("hpcgpu: warning: this torch has no DataLoader worker signal hook; a stop signal "
                          "sent to the whole process group")
    assert err.endswith("can kill loader workers before their rank checkpoints\n") and err.count("\n") == 1


class FakeSignal:
    """The signal module as a loader worker uses it, recording instead of acting."""

    def __init__(self, senders=()):
        for name in ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIG_IGN", "SIG_BLOCK"):
            setattr(self, name, getattr(signal, name))
        self.set, self.masked, self.senders, self.waited = {}, [], list(senders), []

    def signal(self, sig, handler):
        self.set[sig] = handler

    def pthread_sigmask(self, how, sigs):
        self.masked.append((how, set(sigs)))

    def sigwaitinfo(self, sigs):
        self.waited.append(set(sigs))
        return SimpleNamespace(si_pid=self.senders.pop(0))


class FakeThread:
    made = []

    def __init__(self, target=None, args=(), daemon=None, name=None):
        self.target, self.args, self.daemon, self.name, self.started = target, args, daemon, name, False
        FakeThread.made.append(self)

    def start(self):
        self.started = True


def test_a_loader_worker_ignores_stop_signals_and_leaves_sigterm_to_a_waiting_thread(monkeypatch):
    fake = FakeSignal()
    FakeThread.made = []
    monkeypatch.setattr(stop, "signal", fake)
    monkeypatch.setattr(stop, "threading", SimpleNamespace(Thread=FakeThread))
    stop._serve_through_stops()
    assert fake.set == {signal.SIGHUP: signal.SIG_IGN, signal.SIGUSR1: signal.SIG_IGN,
                        signal.SIGUSR2: signal.SIG_IGN, signal.SIGINT: signal.SIG_IGN}
    assert fake.masked == [(signal.SIG_BLOCK, {signal.SIGTERM})]
    (thread,) = FakeThread.made
    assert thread.target is stop._exit_on_parents_sigterm and thread.args == (os.getppid(),)
    assert thread.daemon is True and thread.started and thread.name == "hpcgpu-worker-sigterm"


def test_the_worker_exits_0_on_its_parents_sigterm_only(monkeypatch, fake_os):
    parent = 4242
    fake = FakeSignal(senders=[777, 778, parent])
    monkeypatch.setattr(stop, "signal", fake)
    with pytest.raises(Exited) as exited:
        stop._exit_on_parents_sigterm(parent)
    assert exited.value.code == 0
    assert fake.waited == [{signal.SIGTERM}] * 3  # two strangers' SIGTERMs ignored


def test_the_note_goes_to_stderr_unbuffered_and_survives_a_closed_stderr(capfd, monkeypatch):
    stop._note("hpcgpu: hello")
    assert capfd.readouterr().err == "hpcgpu: hello\n"

    def closed(fd, data):
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(stop, "os", SimpleNamespace(write=closed))
    stop._note("lost")  # no exception


def test_threads_are_imported_for_real_outside_the_fakes():
    assert stop.threading is threading and stop.signal is signal
