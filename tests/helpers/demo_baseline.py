"""One uninterrupted 2-rank run of the demo spec per test session, shared by the modules that need it.

tests/worker/test_resume.py compares every interrupted run with it bit for bit and truncates copies
of its checkpoints, tests/worker/test_resume_other_world_size.py resumes copies of its step 10 on
other world sizes, and tests/worker/test_trainer_epoch_labels.py reads its progress lines. Each run
costs two ranks' worth of torch start-up, so it runs once (tests/helpers/session_once.py).

Its two departures from demo_spec() change no number the training computes (both are keys a resume
accepts as harmless, hpcgpu/worker/report.py): keep_last 10 keeps every checkpoint (10, 20, ..., 60,
64), and log_every 16 prints one progress line per half epoch. Nobody may write into its directory:
tests copy what they change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.launch import Result, demo_spec, run
from tests.helpers.session_once import session_once

SPEC = demo_spec(train={"log_every": 16}, checkpoint={"keep_last": 10})


def demo_baseline(tmp_path_factory: pytest.TempPathFactory) -> Result:
    """The finished run (rc 0 asserted when it ran); its directories outlive every test of the session."""

    def compute() -> dict:
        result = run(tmp_path_factory.mktemp("demo-baseline"), SPEC)
        assert result.rc == 0, result.explain()
        return {"rc": result.rc, "run_dir": str(result.run_dir), "base": str(result.base)}

    got = session_once(tmp_path_factory, "demo-baseline-2ranks", compute)
    return Result(got["rc"], Path(got["run_dir"]), Path(got["base"]))
