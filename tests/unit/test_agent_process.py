"""The early-started node agent of `run local` (hpcgpu/agent_process.py, hpcgpu/agent_child.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from hpcgpu.agent_process import PrestartedAgent, prestart_wanted, wait_forwarding_signals


def test_only_a_real_bare_run_gets_an_early_agent():
    assert prestart_wanted(False, None, {})
    assert not prestart_wanted(True, None, {})  # --dry-run starts nothing
    assert not prestart_wanted(False, "img", {})  # containers run `hpcgpu train` inside the image
    assert not prestart_wanted(False, None, {"HPCGPU_AGENT_IN_PROCESS": "1"})


def test_a_discarded_agent_is_gone_and_did_nothing(tmp_path):
    agent = PrestartedAgent.start()
    assert agent is not None and agent.proc.poll() is None
    agent.discard()
    assert agent.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(agent.proc.pid, 0)
    assert list(tmp_path.iterdir()) == []


def test_eof_without_a_run_makes_the_agent_exit_cleanly():
    proc = subprocess.run([sys.executable, "-m", "hpcgpu.agent_child"], input=b"", capture_output=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr


def test_a_run_dir_without_a_spec_fails_and_says_why(tmp_path):
    agent = PrestartedAgent.start()
    code = agent.run(str(tmp_path / "nothing-here"), {})
    assert code != 0


def test_signals_are_passed_on_once_and_the_status_comes_back(tmp_path):
    # the child counts the SIGUSR2s it gets; the launcher side must pass on exactly one per signal
    script = ("import signal, sys, time\n"
              "n = []\n"
              "signal.signal(signal.SIGUSR2, lambda *a: n.append(1))\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(10 + len(n)))\n"
              "print('ready', flush=True)\n"
              "while True: time.sleep(0.05)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    assert child.stdout.readline() == b"ready\n"
    me = os.getpid()

    def poke():
        time.sleep(0.2)
        os.kill(me, signal.SIGUSR2)
        time.sleep(0.2)
        os.kill(me, signal.SIGTERM)

    import threading

    threading.Thread(target=poke, daemon=True).start()
    assert wait_forwarding_signals(child) == 11
    # and a child killed by a signal reads as 128 + N, as a shell would report it
    killed = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert wait_forwarding_signals(killed) == 128 + signal.SIGKILL
