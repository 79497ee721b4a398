"""A user's own training script gets the same stop/save/resume guarantees through `hpcgpu.dist`."""

import re
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.launch import logged_step, run, start, wait_until  # noqa: E402

from hpcgpu.contract import exitcodes  # noqa: E402

pytestmark = pytest.mark.slow

SCRIPT = str(Path(__file__).resolve().parents[1] / "helpers" / "train_script.py")


def spec(steps: int, delay_s: float) -> dict:
    return {"name": "script", "entry": {"script": SCRIPT, "args": [str(steps), str(delay_s)]},
            "checkpoint": {"keep_last": 2}}


def test_ctrl_c_stops_a_script_cleanly_and_a_rerun_resumes_it(tmp_path):
    launch = start(tmp_path, spec(40, 0.05))
    run_dir = launch.run_dir()
    wait_until(lambda: logged_step(run_dir) >= 7, 90, "step 7")
    launch.proc.send_signal(signal.SIGINT)  # Ctrl-C at the agent: it forwards one SIGINT to the ranks
    stopped = launch.wait()
    assert stopped.rc == exitcodes.STOPPED_RESUMABLE, stopped.explain()
    record = stopped.exit_record(0)
    assert record["status"] == "stopped" and record["reason"] == "SIGINT"
    step = record["step"]
    assert re.search(rf"^stopping at step {step}$", stopped.log(0), re.M)
    assert record["checkpoint"].endswith(f"step_{step:08d}")

    resumed = run(tmp_path, spec(40, 0.0))
    assert resumed.rc == 0, resumed.explain()
    log = resumed.log(0)
    assert f"resumed at step {step} from {record['checkpoint']}" in log
    assert re.findall(r"^step (\d+)/", log, re.M)[0] == str(step + 1)  # nothing repeated, nothing skipped
    assert "final_weight=" in log
    assert resumed.exit_record(1)["status"] == "done"
