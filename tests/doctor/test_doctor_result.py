"""CheckResult, the @check guard (Skip -> skip, crash -> fail), the runner and the torch-free import."""

import subprocess
import sys

import pytest

from hpcgpu.doctor.result import (BUG_HINT, CheckResult, Skip, check, exit_status, human_bytes, ok,
                                  summarize)
from hpcgpu.doctor.runner import STATIC_CHECKS, run_doctor, selected_checks
from tests.helpers.doctor_fakes import FakeNvml, fake_probe, h100s


def test_check_fills_in_the_name():
    @check("demo")
    def demo(_):
        return ok("fine")

    assert demo(None) == CheckResult("demo", "ok", "fine")


def test_skip_becomes_a_skip_result_with_the_reason():
    @check("demo")
    def demo(_):
        raise Skip("no GPU here")

    assert demo(None) == CheckResult("demo", "skip", "no GPU here")


def test_a_crashing_check_becomes_a_fail_naming_the_exception():
    @check("demo")
    def demo(_):
        return {}["missing"]

    r = demo(None)
    assert (r.name, r.status, r.hint) == ("demo", "fail", BUG_HINT)
    assert r.detail == "check crashed: KeyError: 'missing'"


def test_status_is_validated():
    with pytest.raises(ValueError):
        CheckResult("x", "bad", "")


def test_summary_and_exit_status():
    results = [CheckResult("a", "ok", ""), CheckResult("b", "warn", ""), CheckResult("c", "skip", "")]
    assert summarize(results) == {"ok": 1, "warn": 1, "fail": 0, "skip": 1}
    assert exit_status(results) == 0
    assert exit_status(results + [CheckResult("d", "fail", "")]) == 1


@pytest.mark.parametrize("n, text", [(512, "512 B"), (1536, "1.5 KiB"), (64 << 20, "64 MiB"),
                                     (80 << 30, "80 GiB"), (3 << 40, "3 TiB")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


def test_every_check_has_a_unique_name():
    names = [fn.check_name for fn in selected_checks(functional=True, slurm=True)]
    assert len(names) == len(set(names))


class Exploding:
    """An NVML whose every function raises something unexpected."""

    NVMLError = RuntimeError

    def __getattr__(self, name):
        def boom(*args):
            raise ZeroDivisionError(name)
        return boom


def test_doctor_never_crashes_when_every_input_explodes(tmp_path):
    def explode(*args, **kwargs):
        raise MemoryError("boom")

    probe = fake_probe(tmp_path, nvml=Exploding(), which=explode, disk_usage=explode, memlock=explode,
                       hostname=explode, resolve=explode, bind=explode, torch_loader=explode, run=explode)
    results = run_doctor(probe, functional=True, slurm=True)
    assert len(results) == len(STATIC_CHECKS) + 2
    assert {r.status for r in results} <= {"fail", "skip", "ok", "warn"}
    assert any("MemoryError" in r.detail for r in results)


def test_runner_announces_checks_and_releases_nvml(tmp_path):
    nvml = FakeNvml(gpus=h100s(2))
    seen = []
    results = run_doctor(fake_probe(tmp_path, nvml=nvml), functional=False,
                         on_start=lambda i, n, name: seen.append((i, n, name)))
    assert [name for _, _, name in seen] == [r.name for r in results]
    assert seen[0] == (1, len(STATIC_CHECKS), "python")
    assert nvml.calls == ["init", "shutdown"]  # NVML opened once for all GPU checks


def test_importing_the_cli_command_does_not_import_torch():
    code = ("import sys, hpcgpu.cli.doctor_cmd, hpcgpu.doctor.runner, hpcgpu.doctor.functional, "
            "hpcgpu.doctor.slurm_allreduce; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_check_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "doctor.md").read_text()
    missing = [fn.check_name for fn in selected_checks(functional=True, slurm=True)
               if f"### `{fn.check_name}`" not in doc]
    assert not missing, f"add a section to docs/doctor.md for: {missing}"
