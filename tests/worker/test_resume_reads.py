"""Resume reads each checkpoint byte once per job, not once per rank (real ranks under the agent).

Measured, not inferred: a script entry records /proc/self/io `rchar` (bytes this process got from
read() calls) when it starts, which is after the rank has picked and verified its resume point. The
same launch with `checkpoint.resume: never` gives the baseline (interpreter, torch and hpcgpu
imports); the difference is what resume read on that rank.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.launch import run  # noqa: E402

from hpcgpu.worker import checkpoint as ckpt  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = 32 << 20  # a checkpoint well above the noise between two launches (a few hundred KB)

RECORD_RCHAR = """\
import os, sys
from pathlib import Path
fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
Path(sys.argv[1], "rchar" + os.environ["RANK"]).write_text(fields["rchar"])
"""


def rchar_at_start(base: Path, script: Path, resume: str) -> list[int]:
    out = base / f"rchar-{resume}"
    out.mkdir()
    spec = {"name": "reads", "entry": {"script": str(script), "args": [str(out)]}, "checkpoint": {"resume": resume}}
    result = run(base, spec)
    assert result.rc == 0, result.explain()
    return [int((out / f"rchar{rank}").read_text()) for rank in range(2)]


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/<pid>/io")
def test_resume_hashes_the_newest_checkpoint_once_for_all_ranks(tmp_path):
    newest = ckpt.save_state(tmp_path / "checkpoints", 5, {"user": {"w": torch.randn(SIZE // 4)}, "step": 5})
    size = (newest / ckpt.STATE).stat().st_size
    script = tmp_path / "record_rchar.py"
    script.write_text(RECORD_RCHAR)

    never = rchar_at_start(tmp_path, script, "never")
    auto = rchar_at_start(tmp_path, script, "auto")
    extra = [a - n for a, n in zip(auto, never)]
    print(f"checkpoint {size} bytes; bytes resume read per rank: {extra}")
    assert extra[0] >= size, extra  # rank 0 did hash the checkpoint ...
    assert extra[1] < size // 4, f"rank 1 read {extra[1]} bytes of a {size}-byte checkpoint again"  # ... alone
    assert sum(extra) < size * 5 // 4, extra  # each byte once per job (plus noise), not once per rank
