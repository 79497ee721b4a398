"""Stop signals in a real process: idempotent stop requests, a second Ctrl-C exits at once."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hpcgpu.worker import stop

CHILD = textwrap.dedent("""
    import sys, time
    from hpcgpu.worker import stop
    stop.install(cooperative=sys.argv[1] == "1")
    print("ready", flush=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        if stop.requested():
            time.sleep(0.5)  # let the test's further signals arrive
            print("stop requested by", stop.requested(), flush=True)
            sys.exit(0)
        time.sleep(0.01)
    sys.exit(3)
""")


def run_child(cooperative: bool, signals: list) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "1" if cooperative else "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    for sig in signals:
        os.kill(proc.pid, sig)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_repeated_stop_signals_are_one_request():
    # The agent forwards SIGUSR2 and Slurm may deliver it to the rank directly: still one clean stop.
    r = run_child(True, [signal.SIGUSR2, signal.SIGUSR2, signal.SIGTERM])
    assert r.returncode == 0, r.stderr
    assert "stop requested by SIGUSR2" in r.stdout
    assert r.stderr.count("received: stopping at the next step boundary") == 1


def test_first_sigint_asks_for_a_clean_stop():
    r = run_child(True, [signal.SIGINT])
    assert r.returncode == 0 and "stop requested by SIGINT" in r.stdout


def test_second_sigint_exits_at_once_with_130():
    r = run_child(True, [signal.SIGINT, signal.SIGINT])
    assert r.returncode == 130
    assert "second SIGINT: exiting now" in r.stderr and "stop requested" not in r.stdout


def test_script_that_never_polls_keeps_default_sigterm():
    r = run_child(False, [signal.SIGTERM])
    assert r.returncode == -signal.SIGTERM


def test_script_that_never_polls_gets_keyboardinterrupt_on_sigint():
    r = run_child(False, [signal.SIGINT])
    assert r.returncode == -signal.SIGINT and "KeyboardInterrupt" in r.stderr  # as without hpcgpu


def test_script_that_never_polls_is_told_about_sigusr1():
    r = run_child(False, [signal.SIGUSR1])
    assert r.returncode == 0 and "never calls dist.should_stop()" in r.stderr


@pytest.fixture
def fresh_stop():
    stop.reset()
    yield
    stop.reset()


def test_should_stop_without_a_process_group_is_the_local_flag(fresh_stop):
    assert stop.should_stop() is False
    stop.request("test")
    assert stop.should_stop() is True and stop.requested() == "test"



LOADER_CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    from torch.utils.data import DataLoader, Dataset
    from hpcgpu.worker import stop

    class SignalsItself(Dataset):
        # torch elastic and Slurm signal every process of a rank's group, loader workers included
        def __init__(self, sig):
            self.sig = sig
        def __len__(self):
            return 4
        def __getitem__(self, i):
            if i == 1:
                os.kill(os.getpid(), self.sig)
            return torch.tensor([i])

    if sys.argv[1] == "1":
        stop.install(cooperative=True)
    for name in ("SIGTERM", "SIGHUP", "SIGUSR2", "SIGINT"):
        for persistent in (False, True):
            loader = DataLoader(SignalsItself(getattr(signal, name)), num_workers=1, persistent_workers=persistent)
            print(name, persistent, [int(b) for b in loader], flush=True)
    print("stop requested:", stop.requested(), flush=True)
""")


def test_loader_workers_survive_every_stop_signal_once_stop_handlers_are_installed():
    shielded = subprocess.run([sys.executable, "-c", LOADER_CHILD, "1"], capture_output=True, text=True,
                              timeout=120)
    # exiting at all proves the parent's own SIGTERM still ends a worker: multiprocessing terminates
    # the persistent ones at interpreter exit and waits for them without a timeout
    assert shielded.returncode == 0, shielded.stderr
    lines = shielded.stdout.splitlines()
    assert lines[:-1] == [f"{name} {persistent} [0, 1, 2, 3]" for name in ("SIGTERM", "SIGHUP", "SIGUSR2", "SIGINT")
                          for persistent in (False, True)]
    assert lines[-1] == "stop requested: None"  # a worker's signal is not its rank's stop request


def test_without_the_shield_torch_kills_a_loader_worker_on_sigterm():
    # the failure the shield prevents: proves the test above can fail
    bare = subprocess.run([sys.executable, "-c", LOADER_CHILD, "0"], capture_output=True, text=True, timeout=120)
    assert bare.returncode != 0
    assert "is killed by signal: Terminated" in bare.stderr
