"""SIGKILL while a checkpoint is being written leaves the previous one loadable, and resume picks it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

from hpcgpu.worker import checkpoint as ckpt

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from hpcgpu.worker import checkpoint as ckpt

    d = Path(sys.argv[1])
    ckpt.save_state(d, 1, {"w": torch.ones(1000)})
    real_write = ckpt._HashingWriter.write

    def slow_write(self, data):  # a big checkpoint on a slow file system, in slow motion
        n = real_write(self, data)
        (d / "writing").touch()
        time.sleep(0.05)
        return n

    ckpt._HashingWriter.write = slow_write
    ckpt.save_state(d, 2, {"w": torch.full((1000,), 2.0), "more": [torch.zeros(10) for _ in range(50)]})
    (d / "finished").touch()
""")


def test_sigkill_mid_write_leaves_previous_checkpoint_and_resume_picks_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    deadline = time.monotonic() + 30
    while not (tmp_path / "writing").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "writer never started step 2"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "finished").exists()

    leftovers = list(tmp_path.glob(".step_00000002.tmp-*"))
    assert len(leftovers) == 1, "the half-written checkpoint should sit under its temporary name"
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]

    reports = []
    chosen = ckpt.resolve_resume("auto", tmp_path, reports.append)
    assert chosen == tmp_path / "step_00000001" and reports == []
    assert torch.equal(ckpt.load_state(chosen)["w"], torch.ones(1000))

    ckpt.save_state(tmp_path, 3, {"w": torch.zeros(1)})
    ckpt.prune(tmp_path, keep_last=2)  # the next save cleans up after the dead writer
    assert not leftovers[0].exists()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 1]
