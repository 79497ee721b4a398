"""What the launcher's console shows of the ranks, on real `hpcgpu run local` runs of 2 CPU ranks:
`--console all` prefixes every rank's lines and keeps stdout and stderr apart, a terminal gets a bar
drawn in place while the rank logs get plain lines, a failing rank's own traceback reaches the
launcher's stderr with its rank and node (also with `--console none`), and `logs --all/--dedup`
read the run directory. Two runs, each checked for several things (they cost ~15 s apiece)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcgpu.contract.ranklines import CLEAR_TO_EOL, collapse_cr
from tests.helpers.relkit import base_env, hpcgpu, small_spec, start, write_spec

pytestmark = pytest.mark.slow

#: both ranks print "loading data"; rank 0 says whether the agent's console is a terminal and leaves a
#: bar drawn with \r unfinished; rank 1 waits until rank 0 has done so (a file both see), prints to
#: stdout and stderr and raises; rank 0 waits to be stopped by the agent
FAILING_SCRIPT = """
import os, sys, time
rank = int(os.environ["RANK"])
marker = os.path.join(os.environ["HPCGPU_RUN_DIR"], "rank0-printed")
print("loading data", flush=True)
if rank == 0:
    print("console tty:", os.environ.get("HPCGPU_CONSOLE_TTY"), flush=True)
    sys.stdout.write("\\rprogress 1/3\\rprogress 2/3")
    sys.stdout.flush()
    open(marker, "w").close()
    time.sleep(120)
deadline = time.monotonic() + 60
while not os.path.exists(marker) and time.monotonic() < deadline:
    time.sleep(0.02)
print("rank 1 says hello", flush=True)
print("warning: rank 1 is about to fail", file=sys.stderr, flush=True)
raise ValueError("boom from rank 1")
"""


def spec_file(tmp_path: Path) -> Path:
    script = tmp_path / "fail.py"
    script.write_text(FAILING_SCRIPT)
    return write_spec(tmp_path / "job.yaml", small_spec(entry={"script": str(script)}))


def assert_failure_report(stderr: str) -> None:
    """The agent's report on the launcher's stderr: rank, node, and the rank's own traceback."""
    report = stderr[stderr.index("hpcgpu: training failed"):]
    assert re.search(r"rank 1 \(local rank 1, pid \d+, node 0 \(\S+\)\) failed with exit code 1", report), stderr
    assert "Traceback (most recent call last)" in report and "ValueError: boom from rank 1" in report, stderr


def read_terminal(master: int, proc: subprocess.Popen, timeout: float) -> bytes:
    """Everything the launcher wrote to its terminal, until it exits and the terminal is drained."""
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer closed the terminal
                return data
            if not chunk:
                return data
            data += chunk
        elif proc.poll() is not None:
            return data
    proc.kill()
    pytest.fail(f"the launcher was still running after {timeout}s; the terminal showed:\n{data.decode()[-3000:]}")


def test_console_all_on_a_terminal_prefixes_both_ranks_and_logs_all_and_dedup_read_the_run(tmp_path):
    # the launcher's stdout is a terminal, its stderr a file: the two stay apart
    master, slave = pty.openpty()
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hpcgpu", "run", "local", "--nproc", "2", "--console", "all",
                                 "-f", str(spec_file(tmp_path))], cwd=tmp_path, env=base_env(tmp_path / "home"),
                                stdin=subprocess.DEVNULL, stdout=slave, stderr=err, start_new_session=True)
    os.close(slave)
    try:
        shown = read_terminal(master, proc, 180)
    finally:
        os.close(master)
    stdout, stderr = shown.decode(errors="replace"), (tmp_path / "stderr").read_text()
    explain = f"--- terminal ---\n{stdout}\n--- stderr ---\n{stderr}"
    assert proc.wait(30) == 1, explain
    lines = [collapse_cr(line.encode()).replace(CLEAR_TO_EOL, b"").decode() for line in stdout.split("\n")]
    for line in ("[rank 0] loading data", "[rank 1] loading data", "[rank 0] console tty: 1",
                 "[rank 1] rank 1 says hello"):
        assert line in lines, explain
    assert "\r[rank 0] progress 2/3" in stdout, explain  # rank 0's unfinished bar, drawn in place
    # the ranks' stderr stays on stderr: their stdout did not get it (the old rank-0 console did)
    assert "warning" not in stdout and "Traceback" not in stdout, explain
    assert "[rank 1] warning: rank 1 is about to fail" in stderr.splitlines(), explain
    assert "[rank 1] ValueError: boom from rank 1" in stderr.splitlines(), explain
    assert_failure_report(stderr)

    (run_dir,) = (tmp_path / "runs").iterdir()
    log0 = (run_dir / "logs" / "rank0.log").read_bytes()
    assert b"\r" not in log0 and log0.endswith(b"\nprogress 2/3\n"), log0  # the bar as it stood, plain
    merged = hpcgpu(["logs", run_dir, "--all"], tmp_path)
    assert merged.returncode == 0, merged.stderr
    lines = merged.stdout.splitlines()
    # time order: rank 0 printed before rank 1 went on (rank 1 waited for it)
    assert lines.index("[rank 0] loading data") < lines.index("[rank 1] rank 1 says hello"), merged.stdout
    assert "[rank 1] ValueError: boom from rank 1" in lines, merged.stdout  # stderr lines too
    assert all(line.startswith(("[rank 0] ", "[rank 1] ")) for line in lines), merged.stdout
    grouped = hpcgpu(["logs", run_dir, "--dedup"], tmp_path)
    assert grouped.returncode == 0, grouped.stderr
    assert grouped.stdout.splitlines().count("[ranks 0-1] loading data") == 1, grouped.stdout
    assert "loading data" not in grouped.stdout.replace("[ranks 0-1] loading data", ""), grouped.stdout
    assert "[rank 1] rank 1 says hello" in grouped.stdout.splitlines(), grouped.stdout


def test_console_none_shows_nothing_of_the_ranks_but_still_the_failing_ranks_traceback(tmp_path):
    done = start(["run", "local", "--nproc", 2, "--console", "none", "-f", spec_file(tmp_path)], tmp_path).wait(180)
    assert done.rc == 1, done.text
    assert "loading data" not in done.stdout + done.stderr and "[rank" not in done.stdout, done.text
    assert_failure_report(done.stderr)
    log = (done.run_dir() / "logs" / "rank1.log").read_text()  # the log has everything, both streams
    assert "loading data" in log and "warning: rank 1 is about to fail" in log and "ValueError: boom" in log
