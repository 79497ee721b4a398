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
