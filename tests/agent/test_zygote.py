"""The preloaded process ranks are forked from (hpcgpu/agent/zygote.py, hpcgpu/worker/zygote.py).

Its protocol and process handling run here against a real zygote that preloads nothing (a rank of
`python -c`, no torch: fractions of a second); that a real launch's ranks are forked from it and look
freshly started is tests/cli/test_run_local.py's, with torch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcgpu.agent import zygote
from hpcgpu.agent.zygote import ForkedHandler, Zygote, same_imports
from hpcgpu.worker.zygote import stream_buffering

REPO = Path(__file__).resolve().parents[2]
#: a zygote that preloads nothing; each forked "rank" does what its RANK_DOES says
RANK = """
import os, sys, time
from hpcgpu.worker import zygote
zygote.serve(preload=())
does = os.environ["RANK_DOES"]
if does == "report":
    print(repr(sorted(os.environ.items())), os.getsid(0) == os.getpid(), flush=True)
elif does == "sleep":
    time.sleep(60)
sys.exit(int(os.environ.get("RANK_EXIT", "0")))
"""


@pytest.fixture
def started(tmp_path):
    argv = (sys.executable, "-c", RANK)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "RANK_DOES": "exit"}
    z = Zygote(argv, env)
    yield z, env, tmp_path
    z.close()


def spawn(z: Zygote, env: dict, tmp_path: Path, **more) -> ForkedHandler:
    handler = ForkedHandler.start(z, {**env, **more}, str(tmp_path / f"out{time.monotonic_ns()}"), None, 0)
    assert handler is not None
    return handler


def test_a_rank_s_exit_status_reaches_poll_and_wait_as_popen_s(started):
    z, env, tmp_path = started
    handler = spawn(z, env, tmp_path, RANK_EXIT="3")
    assert handler.proc.wait(timeout=30) == 3 and handler.proc.poll() == 3


def test_a_rank_gets_exactly_its_environment_its_own_session_and_its_stdout_file(started):
    z, env, tmp_path = started
    handler = spawn(z, env, tmp_path, RANK_DOES="report", RANK="1")
    assert handler.proc.wait(timeout=30) == 0
    handler.close()
    out = Path(handler._stdout.name).read_text()
    assert out == f"{sorted({**env, 'RANK_DOES': 'report', 'RANK': '1'}.items())!r} True\n"


def test_close_signals_the_rank_s_process_group_and_wait_times_out_like_popen(started):
    z, env, tmp_path = started
    handler = spawn(z, env, tmp_path, RANK_DOES="sleep")
    with pytest.raises(subprocess.TimeoutExpired):
        handler.proc.wait(timeout=0.2)
    assert handler.proc.poll() is None
    handler.close(signal.SIGTERM)
    assert handler.proc.wait(timeout=30) == -signal.SIGTERM


def test_when_the_zygote_ends_its_ranks_end_with_it_and_later_ranks_start_fresh(started):
    z, env, tmp_path = started
    handler = spawn(z, env, tmp_path, RANK_DOES="sleep")
    pid = handler.proc.pid
    z._proc.kill()  # as when the agent dies: the zygote gets SIGKILL, its ranks their PR_SET_PDEATHSIG
    assert handler.proc.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
        assert time.monotonic() < deadline, "the rank outlived its zygote"
        time.sleep(0.05)
    assert z.gone and not z.fits(z.argv, z.env)  # torch elastic's own Popen takes over
    assert ForkedHandler.start(z, env, None, None, 0) is None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_handler_for_forks_only_the_command_and_environment_it_preloaded(started, monkeypatch):
    z, env, tmp_path = started
    monkeypatch.setattr(zygote, "_current", z)
    monkeypatch.setattr(os, "environ", {})  # torch elastic adds the rank's variables to the agent's
    forked = zygote.handler_for(z.argv[0], z.argv[1:], {**env, "RANK": "0"}, None, None, 0)
    assert forked is not None and forked.proc.wait(timeout=30) == 0
    assert zygote.handler_for(z.argv[0], (*z.argv[1:], "x"), env, None, None, 0) is None
    assert zygote.handler_for(z.argv[0], z.argv[1:], {**env, "TORCH_LOGS": "+dynamo"}, None, None, 0) is None


def test_variables_set_per_rank_may_differ_others_may_not():
    base = {"PATH": "/bin", "PYTHONPATH": "/src", "OMP_NUM_THREADS": "4"}
    per_rank = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29500", "TORCHELASTIC_RESTART_COUNT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",
                "NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0", "HPCGPU_RESUME_FROM": "/ck/step_8"}
    assert same_imports(base, {**base, **per_rank})
    for name, value in [("TORCH_LOGS", "+dynamo"), ("PYTHONPATH", "/other"), ("OMP_NUM_THREADS", "1"),
                        ("TORCHDYNAMO_DISABLE", "1"), ("LD_PRELOAD", "x.so"), ("CUDA_VISIBLE_DEVICES", "1")]:
        assert not same_imports(base, {**base, name: value}), name
    assert not same_imports(base, {k: v for k, v in base.items() if k != "PATH"})


def test_forking_is_off_with_hpcgpu_fork_ranks_0():
    assert zygote.wanted({}) and zygote.wanted({"HPCGPU_FORK_RANKS": "1"})
    assert not zygote.wanted({"HPCGPU_FORK_RANKS": "0"})


@pytest.mark.parametrize("is_tty, is_stderr, unbuffered, expected", [
    (False, False, False, (False, False)),  # stdout to a pipe or file: block-buffered
    (True, False, False, (True, False)),    # stdout on a terminal: line-buffered
    (False, True, False, (True, False)),    # stderr: line-buffered always (Python 3.9+)
    (False, False, True, (False, True)),    # -u / PYTHONUNBUFFERED: written through
    (True, True, True, (False, True)),
])
def test_a_forked_rank_s_standard_streams_buffer_as_at_python_s_startup(is_tty, is_stderr, unbuffered, expected):
    assert stream_buffering(is_tty, is_stderr, unbuffered) == expected



def test_a_kernel_without_pidfds_gets_fresh_ranks_not_a_zygote_that_dies_mid_run(tmp_path):
    """Without pidfds (Linux < 5.3) the zygote could not hear its ranks end: it leaves before forking any."""
    no_pidfds = "import os\ndef refused(pid):\n    raise OSError(38, 'Function not implemented')\nos.pidfd_open = refused\n"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "RANK_DOES": "exit"}
    z = Zygote((sys.executable, "-c", no_pidfds + RANK), env)
    try:
        assert ForkedHandler.start(z, env, None, None, 0) is None
        assert z.gone and not z.fits(z.argv, z.env)
    finally:
        z.close()


def test_a_rank_that_fails_to_set_up_is_refused_and_the_zygote_serves_the_next(started, capfd):
    z, env, tmp_path = started
    assert z.spawn({**env, "RANK": 1}, {}) is None  # a number: os.environ refuses it in the new rank
    assert not z.gone
    handler = spawn(z, env, tmp_path, RANK_EXIT="4")
    assert handler.proc.wait(timeout=30) == 4
