"""SlurmBackend.status and cancel without Slurm: `scontrol show job` (_show_job) and shutil.which are
replaced, so each JobState, the run dir's result.json, run.json and the rdzv/ endpoint files decide."""

from __future__ import annotations

import subprocess
import time
import types

import pytest

from hpcgpu.backends.slurm import backend as sb
from hpcgpu.backends.slurm.backend import SlurmBackend
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.runfiles import read_json, write_json_atomic
from hpcgpu.contract.states import RunState
from hpcgpu.host.runs import RunRecord

SLURM_TIME = "%Y-%m-%dT%H:%M:%S"


@pytest.fixture
def slurm(monkeypatch, tmp_path):
    """A fake scontrol: set .fields (None: the job is forgotten); calls are recorded."""
    fake = types.SimpleNamespace(fields=None, calls=[], run_calls=[])

    def show_job(job_id):
        fake.calls.append(job_id)
        return None if fake.fields is None else dict(fake.fields)

    def run(argv, timeout=30):
        fake.run_calls.append(argv)
        return subprocess.CompletedProcess(argv, fake.__dict__.get("rc", 0), "", fake.__dict__.get("stderr", ""))

    monkeypatch.setattr(sb, "_show_job", show_job)
    monkeypatch.setattr(sb, "_run", run)
    monkeypatch.setattr(sb, "shutil", types.SimpleNamespace(which=lambda name: f"/usr/bin/{name}"))
    (tmp_path / "rdzv").mkdir()
    write_json_atomic(tmp_path / "run.json", {"id": "s-1", "backend": "slurm", "job_id": "123"})
    fake.record = RunRecord(id="s-1", run_dir=str(tmp_path), backend="slurm", created=0.0, job_id="123")
    fake.run_dir = tmp_path
    return fake


def result(run_dir, code, ended):
    write_json_atomic(run_dir / "result.json", {"exit_code": code, "ended": ended})


#: scontrol's JobState -> the RunState status reports (no result.json)
EXPECTED = {
    "PENDING": RunState.PENDING, "REQUEUED": RunState.PENDING, "REQUEUE_FED": RunState.PENDING,
    "CONFIGURING": RunState.RUNNING, "RUNNING": RunState.RUNNING, "COMPLETING": RunState.RUNNING,
    "RESIZING": RunState.RUNNING, "SUSPENDED": RunState.RUNNING, "SIGNALING": RunState.RUNNING,
    "STAGE_OUT": RunState.RUNNING, "STOPPED": RunState.RUNNING,
    "COMPLETED": RunState.DONE, "CANCELLED": RunState.CANCELLED, "FAILED": RunState.FAILED,
    "BOOT_FAIL": RunState.FAILED, "TIMEOUT": RunState.TIMEOUT, "DEADLINE": RunState.TIMEOUT,
    "PREEMPTED": RunState.PREEMPTED, "NODE_FAIL": RunState.NODE_FAIL, "OUT_OF_MEMORY": RunState.OUT_OF_MEMORY,
    "REQUEUE_HOLD": RunState.HELD, "SPECIAL_EXIT": RunState.HELD,
}


@pytest.mark.parametrize("job_state", sorted(EXPECTED))
def test_each_slurm_state_maps_to_its_run_state(slurm, job_state):
    slurm.fields = {"JobState": job_state, "Reason": "None", "StartTime": "Unknown"}
    status = SlurmBackend().status(slurm.record)
    assert status.state is EXPECTED[job_state]
    assert status.reason == "" and slurm.calls == ["123"]


def test_a_reason_is_passed_on(slurm):
    slurm.fields = {"JobState": "PENDING", "Reason": "Resources"}
    assert SlurmBackend().status(slurm.record).reason == "Resources"


@pytest.mark.parametrize("code, state", [(0, RunState.DONE), (75, RunState.STOPPED), (1, RunState.FAILED)])
def test_a_completed_job_takes_its_state_from_result_json(slurm, code, state):
    slurm.fields = {"JobState": "COMPLETED", "Reason": "None"}
    result(slurm.run_dir, code, time.time())
    assert SlurmBackend().status(slurm.record).state is state


@pytest.mark.parametrize("code, state", [(0, RunState.DONE), (75, RunState.STOPPED), (1, RunState.FAILED)])
def test_a_forgotten_job_takes_its_state_from_result_json(slurm, code, state):
    slurm.fields = None
    result(slurm.run_dir, code, time.time())
    assert SlurmBackend().status(slurm.record).state is state


def test_a_forgotten_job_without_a_result_is_unknown(slurm):
    slurm.fields = None
    assert SlurmBackend().status(slurm.record).state is RunState.UNKNOWN


def test_without_scontrol_the_run_dir_decides(slurm, monkeypatch):
    monkeypatch.setattr(sb, "shutil", types.SimpleNamespace(which=lambda name: None))
    slurm.fields = {"JobState": "RUNNING"}
    assert SlurmBackend().status(slurm.record).state is RunState.UNKNOWN
    result(slurm.run_dir, 75, time.time())
    assert SlurmBackend().status(slurm.record).state is RunState.STOPPED
    assert slurm.calls == []


def test_a_run_without_a_job_id_is_not_looked_up(slurm):
    record = RunRecord(id="s-1", run_dir=str(slurm.run_dir), backend="slurm", created=0.0)
    slurm.fields = {"JobState": "RUNNING"}
    assert SlurmBackend().status(record).state is RunState.UNKNOWN and slurm.calls == []


def test_failed_with_a_stopped_result_written_after_start_is_stopped(slurm):
    ended = time.time() - 60
    slurm.fields = {"JobState": "FAILED", "Reason": "NonZeroExitCode",
                    "StartTime": time.strftime(SLURM_TIME, time.localtime(ended - 100))}
    result(slurm.run_dir, 75, ended)
    status = SlurmBackend().status(slurm.record)
    assert status.state is RunState.STOPPED and status.reason == "NonZeroExitCode"


def test_failed_with_a_stopped_result_from_before_the_start_stays_failed(slurm):
    ended = time.time() - 600
    slurm.fields = {"JobState": "FAILED", "StartTime": time.strftime(SLURM_TIME, time.localtime(ended + 100))}
    result(slurm.run_dir, 75, ended)
    assert SlurmBackend().status(slurm.record).state is RunState.FAILED


def test_failed_with_a_failed_result_stays_failed(slurm):
    ended = time.time() - 60
    slurm.fields = {"JobState": "FAILED", "StartTime": time.strftime(SLURM_TIME, time.localtime(ended - 100))}
    result(slurm.run_dir, 1, ended)
    assert SlurmBackend().status(slurm.record).state is RunState.FAILED


def test_other_ended_states_are_not_refined_by_a_stopped_result(slurm):
    slurm.fields = {"JobState": "TIMEOUT", "StartTime": "2000-01-01T00:00:00"}
    result(slurm.run_dir, 75, time.time())
    assert SlurmBackend().status(slurm.record).state is RunState.TIMEOUT


@pytest.mark.parametrize("reason, shown", [("None", "WEIRD_NEW"), ("Because", "WEIRD_NEW Because")])
def test_an_unknown_slurm_state_is_unknown_with_the_raw_state_in_the_reason(slurm, reason, shown):
    slurm.fields = {"JobState": "WEIRD_NEW", "Reason": reason}
    status = SlurmBackend().status(slurm.record)
    assert status.state is RunState.UNKNOWN and status.reason == shown


@pytest.mark.parametrize("saved, scontrol, endpoint_files, expected", [
    (0, None, [], 0),
    (4, "1", ["123-2.endpoint"], 4),
    (1, "5", ["123-2.endpoint"], 5),
    (1, "2", ["123-0.endpoint", "123-3.endpoint", "123-6.endpoint.tmp.9", "999-9.endpoint", "x123-8.endpoint"], 3),
])
def test_restarts_are_the_most_any_source_counted(slurm, saved, scontrol, endpoint_files, expected):
    write_json_atomic(slurm.run_dir / "run.json", {"id": "s-1", "job_id": "123", "restarts": saved})
    for name in endpoint_files:
        (slurm.run_dir / "rdzv" / name).write_text("n0:1\n")
    slurm.fields = {"JobState": "RUNNING", "NodeList": "n[1-2]"}
    if scontrol is not None:
        slurm.fields["Restarts"] = scontrol
    status = SlurmBackend().status(slurm.record)
    assert status.restarts == expected and status.nodes == "n[1-2]"
    # remembered in run.json for when Slurm has forgotten the job
    assert read_json(slurm.run_dir / "run.json")["restarts"] == expected
    assert read_json(slurm.run_dir / "run.json")["nodelist"] == "n[1-2]"


def test_a_forgotten_job_reports_what_run_json_remembered(slurm):
    write_json_atomic(slurm.run_dir / "run.json", {"id": "s-1", "job_id": "123", "restarts": 2, "nodelist": "n7"})
    (slurm.run_dir / "rdzv" / "123-1.endpoint").write_text("n7:1\n")
    status = SlurmBackend().status(slurm.record)
    assert (status.restarts, status.nodes) == (2, "n7")


def test_cancel_refuses_an_ended_job(slurm):
    slurm.fields = {"JobState": "COMPLETED"}
    with pytest.raises(UserError, match="has already ended: DONE"):
        SlurmBackend().cancel(slurm.record)
    assert slurm.run_calls == []


def test_cancel_of_a_running_job_runs_scancel(slurm):
    slurm.fields = {"JobState": "RUNNING"}
    SlurmBackend().cancel(slurm.record)
    assert slurm.run_calls == [["scancel", "123"]]


def test_cancel_of_a_held_job_runs_scancel(slurm):
    slurm.fields = {"JobState": "REQUEUE_HOLD"}
    SlurmBackend().cancel(slurm.record)
    assert slurm.run_calls == [["scancel", "123"]]


def test_a_failing_scancel_is_a_user_error_with_its_message(slurm):
    slurm.fields = {"JobState": "PENDING"}
    slurm.rc, slurm.stderr = 1, "scancel: error: Access denied\n"
    with pytest.raises(UserError, match="scancel 123 failed: scancel: error: Access denied"):
        SlurmBackend().cancel(slurm.record)


def test_cancel_without_a_job_id_is_refused(slurm):
    record = RunRecord(id="s-1", run_dir=str(slurm.run_dir), backend="slurm", created=0.0)
    with pytest.raises(UserError, match="has no Slurm job id yet"):
        SlurmBackend().cancel(record)
    assert slurm.run_calls == []
