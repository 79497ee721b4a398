"""`hpcgpu doctor` flags, output formats and exit status, with the checks replaced by fixed results."""

import json

import pytest

import hpcgpu.doctor.runner as runner
from hpcgpu.cli import main
from hpcgpu.doctor.result import CheckResult

FINE = [CheckResult("python", "ok", "3.11.7"), CheckResult("gpus", "skip", "no GPU")]
BROKEN = FINE + [CheckResult("shm", "fail", "/dev/shm 64 MiB", "use --ipc=host")]


@pytest.fixture
def fake_run(monkeypatch):
    calls = {}

    def install(results):
        def run_doctor(probe, functional=True, slurm=False, on_start=None):
            calls.update(probe=probe, functional=functional, slurm=slurm)
            return results
        monkeypatch.setattr(runner, "run_doctor", run_doctor)
        return calls
    return install


def invoke(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_exit_status_0_when_nothing_failed(fake_run, capsys):
    fake_run(FINE)
    assert invoke(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CHECK") and "doctor passed: 1 ok, 0 warn, 0 fail, 1 skip" in out


def test_exit_status_1_when_a_check_failed(fake_run, capsys):
    fake_run(BROKEN)
    assert invoke(["doctor"]) == 1
    assert "-> use --ipc=host" in capsys.readouterr().out


def test_json(fake_run, capsys):
    fake_run(BROKEN)
    assert invoke(["doctor", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and [c["name"] for c in data["checks"]] == ["python", "gpus", "shm"]


def test_report(fake_run, capsys):
    fake_run(FINE)
    assert invoke(["doctor", "--report"]) == 0
    assert capsys.readouterr().out.startswith("### `hpcgpu doctor` report")


def test_options_reach_the_probe(fake_run, tmp_path):
    calls = fake_run(FINE)
    invoke(["doctor", "--no-functional", "--slurm", "--nproc", "3", "--checkpoint-dir",
            str(tmp_path), "--timeout", "30"])
    assert calls["functional"] is False and calls["slurm"] is True
    p = calls["probe"]
    assert (p.nproc, p.checkpoint_dir, p.timeout) == (3, tmp_path, 30.0)


def test_json_and_report_are_exclusive(capsys):
    assert invoke(["doctor", "--json", "--report"]) == 2
    assert "exclusive" in capsys.readouterr().err


def test_bad_nproc_is_a_usage_error():
    assert invoke(["doctor", "--nproc", "0"]) == 2
