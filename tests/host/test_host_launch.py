"""The one launch/resume flow (host/launch.py), run with the dummy backend: what a start creates, what
a refused start leaves (nothing), how a resume keeps the previous result and undoes itself when the
backend refuses, and how `-- CMD` becomes the entry."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hpcgpu import backends
from hpcgpu.backends import LaunchHandle
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import load_plan
from hpcgpu.contract.runfiles import read_json, write_json_atomic, write_result
from hpcgpu.contract.specview import RESOLVED_HEADER
from hpcgpu.host import launch
from hpcgpu.host.runs import find_run, update_record
from hpcgpu.host.spec import ENV_OVERRIDES, parse_spec
from tests.helpers.dummy_backend import DummyBackend

SPEC = "name: lt\nresources: {gpus_per_node: 0, procs_per_node: 2}\nenv: {HF_TOKEN: t0k-value, MY_FLAG: '1'}\n"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The dummy backend registered, HPCGPU_HOME in tmp, no HPCGPU_* overrides, cwd = tmp_path/work."""
    monkeypatch.setitem(backends.REGISTRY, "dummy", "tests.helpers.dummy_backend:DummyBackend")
    monkeypatch.setitem(backends.NODE_HALVES, "dummy", "tests.helpers.dummy_backend")
    monkeypatch.setattr(DummyBackend, "launched", [])
    for name in ENV_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HPCGPU_HOME", str(tmp_path / "state"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def refuse(message):
    def launch_(self, plan, withheld):
        raise UserError(message)
    return launch_


def test_start_creates_the_run_dir_with_the_launched_plan(home):
    got = {}
    launched = launch.start(parse_spec(SPEC), "dummy", announce=lambda plan: got.setdefault("announced", plan))
    plan = launched.plan
    run_dir = Path(plan.run_dir)
    assert run_dir.parent == home / "work" / "runs" and plan.run_id.startswith("lt-")
    assert launched.handle == LaunchHandle(run_id=plan.run_id, exit_code=0)
    assert DummyBackend.launched == [plan] and got["announced"] == plan
    assert load_plan(run_dir) == plan
    assert (run_dir / "spec.yaml").read_text().startswith(RESOLVED_HEADER)
    run_json = read_json(run_dir / "run.json")
    assert run_json["id"] == plan.run_id and run_json["backend"] == "dummy"
    assert run_json["cwd"] == str(home / "work") and run_json["pid"] == os.getpid()
    for d in ("", "logs", "checkpoints", "tb", "exit", "rdzv"):
        assert mode(run_dir / d) == 0o700, d
    assert mode(run_dir / "plan.json") == 0o600 and mode(run_dir / "run.json") == 0o600
    # the run is in the index
    assert find_run(plan.run_id).run_dir == str(run_dir)


def test_start_hands_secret_values_to_the_backend_and_writes_none(home, monkeypatch):
    seen = {}

    def launch_(self, plan, withheld):
        seen.update(withheld)
        return LaunchHandle(run_id=plan.run_id, exit_code=0)

    monkeypatch.setattr(DummyBackend, "launch", launch_)
    plan = launch.start(parse_spec(SPEC), "dummy").plan
    assert seen == {"HF_TOKEN": "t0k-value"}
    run_dir = Path(plan.run_dir)
    for name in ("plan.json", "spec.yaml", "run.json"):
        assert "t0k-value" not in (run_dir / name).read_text(), name


def test_a_launch_refused_with_a_user_error_leaves_no_run_dir(home, monkeypatch):
    seen = []
    monkeypatch.setattr(DummyBackend, "launch", refuse("sbatch said no"))
    with pytest.raises(UserError, match="sbatch said no"):
        launch.start(parse_spec(SPEC), "dummy", announce=seen.append)
    run_dir = Path(seen[0].run_dir)
    assert not run_dir.exists()
    assert list((home / "work" / "runs").iterdir()) == []
    with pytest.raises(UserError, match="no run matches"):  # its index line leads nowhere
        find_run(seen[0].run_id)


def test_a_refused_preflight_creates_nothing(home, monkeypatch):
    def preflight(self, plan, *, resuming=None):
        raise UserError("no sbatch here")

    monkeypatch.setattr(DummyBackend, "preflight", preflight)
    with pytest.raises(UserError, match="no sbatch here"):
        launch.start(parse_spec(SPEC), "dummy")
    assert list((home / "work").iterdir()) == []
    assert not (home / "state").exists()
    assert DummyBackend.launched == []


def test_plan_new_creates_nothing(home):
    plan = launch.plan_new(parse_spec(SPEC), "dummy")
    assert plan.run_dir.startswith(str(home / "work" / "runs") + os.sep)
    assert list((home / "work").iterdir()) == [] and not (home / "state").exists()
    assert DummyBackend.launched == []


def test_two_starts_get_two_run_dirs(home):
    a = launch.start(parse_spec(SPEC), "dummy").plan
    b = launch.start(parse_spec(SPEC), "dummy").plan
    assert a.run_id != b.run_id and a.run_dir != b.run_dir


# ---------------------------------------------------------------- resume


def started(home) -> Path:
    plan = launch.start(parse_spec(SPEC), "dummy").plan
    return Path(plan.run_dir)


def test_resume_keeps_the_previous_result_and_rewrites_the_plan(home):
    run_dir = started(home)
    run_id = run_dir.name
    write_result(run_dir, 75)
    stale = json.loads((run_dir / "plan.json").read_text())
    stale["created"] = 1.0
    write_json_atomic(run_dir / "plan.json", stale)

    launched = launch.resume(run_id, "dummy")
    assert launched.plan.run_id == run_id and launched.plan.run_dir == str(run_dir)
    assert not (run_dir / "result.json").exists()
    assert read_json(run_dir / "result-0.json")["exit_code"] == 75
    assert load_plan(run_dir) == launched.plan and launched.plan.created != 1.0
    assert DummyBackend.launched[-1] == launched.plan
    assert read_json(run_dir / "run.json")["restarts"] == 1

    # the next resume keeps that attempt's result under the next name
    write_result(run_dir, 1)
    launch.resume(run_id, "dummy")
    assert read_json(run_dir / "result-0.json")["exit_code"] == 75
    assert read_json(run_dir / "result-1.json")["exit_code"] == 1
    assert read_json(run_dir / "run.json")["restarts"] == 2


def test_resume_of_a_job_names_the_kept_result_after_the_job(home):
    run_dir = started(home)
    update_record(run_dir, job_id="4242")
    write_result(run_dir, 75)
    launch.resume(run_dir.name, "dummy")
    assert read_json(run_dir / "result-job4242.json")["exit_code"] == 75


def test_a_resume_refused_by_the_backend_restores_result_and_run_json(home, monkeypatch):
    run_dir = started(home)
    write_result(run_dir, 75)
    result_before = (run_dir / "result.json").read_text()
    run_json_before = read_json(run_dir / "run.json")
    monkeypatch.setattr(DummyBackend, "launch", refuse("no slot"))
    with pytest.raises(UserError, match="no slot"):
        launch.resume(run_dir.name, "dummy")
    assert (run_dir / "result.json").read_text() == result_before
    assert not (run_dir / "result-0.json").exists()
    assert read_json(run_dir / "run.json") == run_json_before


def test_a_refused_resume_without_a_previous_result_creates_none(home, monkeypatch):
    run_dir = started(home)
    monkeypatch.setattr(DummyBackend, "launch", refuse("no slot"))
    with pytest.raises(UserError):
        launch.resume(run_dir.name, "dummy")
    assert not (run_dir / "result.json").exists() and not (run_dir / "result-0.json").exists()
    assert "restarts" not in read_json(run_dir / "run.json")


@pytest.mark.parametrize("ran_on, resumed_with, how", [
    ("slurm", "local", "hpcgpu submit slurm --resume {id}"),
    ("local", "slurm", "hpcgpu run local --resume {id}"),
])
def test_resuming_a_run_of_another_backend_names_its_command(home, ran_on, resumed_with, how):
    run_dir = started(home)
    update_record(run_dir, backend=ran_on)
    with pytest.raises(UserError, match=f"ran on {ran_on}, not {resumed_with}") as info:
        launch.resume(run_dir.name, resumed_with)
    assert info.value.hint == f"continue it with: {how.format(id=run_dir.name)}"
    assert not (run_dir / "result-0.json").exists() and "restarts" not in read_json(run_dir / "run.json")


def test_resuming_a_run_of_a_backend_without_a_resume_command_has_no_hint(home):
    run_dir = started(home)
    with pytest.raises(UserError, match="ran on dummy, not local") as info:
        launch.resume(run_dir.name, "local")
    assert info.value.hint is None


def test_resume_runs_in_the_directory_the_run_was_started_from(home, monkeypatch, tmp_path):
    run_dir = started(home)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    launch.resume(run_dir.name, "dummy")
    assert os.getcwd() == str(home / "work")


# ---------------------------------------------------------------- -- CMD


def test_dash_m_gives_a_module_entry(home):
    spec, source = launch.load_with_overrides(None, {}, ("-m", "pkg.mod", "a", "b"))
    assert source == "<bundled demo>"
    assert (spec.entry.module, spec.entry.args, spec.entry.script, spec.entry.task) == ("pkg.mod", ["a", "b"], None, None)


def test_dash_m_replaces_a_script_entry_of_the_spec_file(home):
    Path("hpcgpu.yaml").write_text("name: mine\nentry: {script: old.py, args: [--old]}\n")
    spec, _ = launch.load_with_overrides(None, {}, ("-m", "pkg.mod"))
    assert (spec.entry.module, spec.entry.script, spec.entry.args) == ("pkg.mod", None, [])


def test_dash_m_without_a_module_is_a_user_error(home):
    with pytest.raises(UserError, match="needs a module name"):
        launch.load_with_overrides(None, {}, ("-m",))


def test_a_script_entry_replaces_the_spec_files_entry(home):
    Path("hpcgpu.yaml").write_text("name: mine\nentry: {task: 'pkg.mod:make', task_args: {n: 1}}\n")
    Path("train.py").write_text("")
    spec, source = launch.load_with_overrides(None, {}, ("python", "train.py", "--lr", "3"))
    assert source == "hpcgpu.yaml" and spec.name == "mine"
    assert (spec.entry.script, spec.entry.args, spec.entry.task, spec.entry.module) == ("train.py", ["--lr", "3"], None, None)


@pytest.mark.parametrize("cmd, env", [
    (("python", "-u", "x.py", "--lr", "3"), {"PYTHONUNBUFFERED": "1"}),
    (("python3", "-uB", "x.py", "--lr", "3"), {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}),
    (("/usr/bin/python3.12", "-OO", "x.py", "--lr", "3"), {"PYTHONOPTIMIZE": "2"}),
    (("python", "-O", "x.py", "--lr", "3"), {"PYTHONOPTIMIZE": "1"}),
    (("python", "-W", "ignore", "-Werror::DeprecationWarning", "x.py", "--lr", "3"),
     {"PYTHONWARNINGS": "ignore,error::DeprecationWarning"}),
    (("python", "-X", "faulthandler", "-Xutf8", "x.py", "--lr", "3"), {"PYTHONFAULTHANDLER": "1", "PYTHONUTF8": "1"}),
    (("python", "x.py", "--lr", "3"), {}),
])
def test_a_leading_interpreter_and_its_flags_become_the_script_and_environment(home, cmd, env):
    # torchrun users type `torchrun ... python -u train.py`; the ranks run `python -m hpcgpu.worker`,
    # so each flag reaches the script as the environment variable with the same effect
    Path("x.py").write_text("")
    spec, _ = launch.load_with_overrides(None, {}, cmd)
    assert (spec.entry.script, spec.entry.args) == ("x.py", ["--lr", "3"])
    assert {k: spec.env[k] for k in spec.env if k.startswith("PYTHON")} == env


def test_an_interpreter_with_flags_before_dash_m_gives_a_module_entry(home):
    spec, _ = launch.load_with_overrides(None, {}, ("python", "-u", "-m", "pkg.mod", "a"))
    assert (spec.entry.module, spec.entry.args, spec.env["PYTHONUNBUFFERED"]) == ("pkg.mod", ["a"], "1")


@pytest.mark.parametrize("flag", ["-E", "-I", "-c", "-uE", "-Xfrozen_modules=off"])
def test_an_interpreter_flag_that_cannot_reach_the_ranks_is_refused_naming_it(home, flag):
    Path("x.py").write_text("")
    with pytest.raises(UserError) as info:
        launch.load_with_overrides(None, {}, ("python", flag, "x.py"))
    assert "cannot reach the ranks" in info.value.message and "-u, -B, -O" in info.value.hint


def test_a_value_flag_without_its_value_is_refused(home):
    with pytest.raises(UserError, match="needs a value"):
        launch.load_with_overrides(None, {}, ("python", "-W"))


def test_the_users_exported_variable_still_wins_over_an_interpreter_flag(home):
    # the flag lands in the spec's env:, under the user's own environment (docs/spec.md `env`)
    Path("x.py").write_text("")
    spec, _ = launch.load_with_overrides(None, {}, ("python", "-u", "x.py"))
    from hpcgpu.host.envvars import merge_under

    merged = merge_under([], spec.env, {"PYTHONUNBUFFERED": "0"})
    assert "PYTHONUNBUFFERED" not in merged.added


@pytest.mark.parametrize("name, content", [
    ("run.sh", b"#!/bin/bash\necho hi\n"),
    ("run", b"#!/usr/bin/env bash\nexec python train.py\n"),
    ("a.out", b"\x7fELF\x02\x01\x01" + b"\0" * 64),
])
def test_a_script_that_is_not_python_is_refused_before_anything_starts(home, name, content):
    # `-- ./run.sh` used to be run by Python and die in every rank with a SyntaxError
    Path(name).write_bytes(content)
    with pytest.raises(UserError) as info:
        launch.load_with_overrides(None, {}, (f"./{name}", "--x"))
    assert f"'./{name}' is not a Python script" in info.value.message and "-m pkg.module" in info.value.hint


@pytest.mark.parametrize("name, content", [
    ("train.py", b"#!/bin/bash\n"),  # .py: Python's, whatever its first line says
    ("train", b"#!/usr/bin/env python3\nprint(1)\n"),
    ("job", b"import sys\nprint(sys.argv)\n"),  # no #! line: Python, as `python job` would take it
])
def test_python_scripts_with_or_without_a_py_suffix_are_accepted(home, name, content):
    Path(name).write_bytes(content)
    spec, _ = launch.load_with_overrides(None, {}, (name,))
    assert spec.entry.script == name


def test_a_missing_script_is_a_user_error_naming_it(home):
    with pytest.raises(UserError, match=r"entry.script 'nothere.py' not found") as info:
        launch.load_with_overrides(None, {}, ("nothere.py", "--x"))
    assert "relative to the directory" in info.value.hint


def test_a_missing_script_in_the_spec_file_is_a_user_error_too(home):
    Path("hpcgpu.yaml").write_text("entry: {script: gone.py}\n")
    with pytest.raises(UserError, match=r"entry.script 'gone.py' not found"):
        launch.load_with_overrides(None, {})


def test_flags_beat_hpcgpu_environment_overrides_which_beat_the_spec(home, monkeypatch):
    Path("hpcgpu.yaml").write_text("name: fromspec\nresources: {nodes: 1, procs_per_node: 2}\n")
    monkeypatch.setenv("HPCGPU_NAME", "fromenv")
    monkeypatch.setenv("HPCGPU_NPROC", "3")
    spec, _ = launch.load_with_overrides(None, {"name": "fromflag"})
    assert spec.name == "fromflag" and spec.resources.procs_per_node == 3


# ---------------------------------------------------------------- resume of a run whose checkpoints are all broken


def fake_checkpoint(ckpt_dir: Path, step: int, size: int = 64, truncate_to=None) -> Path:
    """A checkpoint as the ranks commit it (a file, then the manifest with its size), written without
    torch; truncate_to cuts the file afterwards, as a full disk or a killed copy would."""
    from hpcgpu.contract.checkpoints import FORMAT, MANIFEST, step_dir_name

    path = ckpt_dir / step_dir_name(step)
    path.mkdir(parents=True)
    (path / "state.pt").write_bytes(b"x" * size)
    (path / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step,
                                             "files": {"state.pt": {"bytes": size, "sha256": "0" * 64}}}))
    if truncate_to is not None:
        (path / "state.pt").write_bytes(b"x" * truncate_to)
    return path


def test_a_resume_whose_checkpoints_are_all_broken_is_refused_and_changes_nothing(home):
    run_dir = started(home)
    ckpt_dir = run_dir / "checkpoints"
    fake_checkpoint(ckpt_dir, 10, truncate_to=3)
    (fake_checkpoint(ckpt_dir, 20) / "manifest.json").unlink()  # a save cut short before its commit
    (ckpt_dir / "step_00000005.corrupt").mkdir()
    write_result(run_dir, 75)
    before = {name: (run_dir / name).read_text() for name in ("run.json", "plan.json", "result.json")}
    launched_before = list(DummyBackend.launched)

    with pytest.raises(UserError) as info:
        launch.resume(run_dir.name, "dummy")
    message = str(info.value)
    assert f"every checkpoint of run {run_dir.name} is corrupt or incomplete: resuming would start from step 0" in message
    assert "step_00000020: no manifest.json" in message and "step_00000010: state.pt has 3 bytes" in message
    assert "step_00000005.corrupt: set aside" in message
    assert f"--resume {run_dir.name} --allow-restart-from-zero" in info.value.hint
    assert DummyBackend.launched == launched_before
    assert {name: (run_dir / name).read_text() for name in before} == before
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["step_00000005.corrupt", "step_00000010", "step_00000020"]

    launched = launch.resume(run_dir.name, "dummy", allow_restart=True)  # the user says so: go on
    assert DummyBackend.launched[-1] == launched.plan


def test_a_resume_with_one_complete_checkpoint_or_none_at_all_goes_on(home, capsys):
    run_dir = started(home)
    launch.resume(run_dir.name, "dummy")  # stopped before its first save: nothing was lost
    assert "has no checkpoint in" in capsys.readouterr().err
    fake_checkpoint(run_dir / "checkpoints", 10)
    fake_checkpoint(run_dir / "checkpoints", 20, truncate_to=1)
    launch.resume(run_dir.name, "dummy")  # the ranks fall back to step 10
    assert capsys.readouterr().err == ""


def test_a_resume_of_a_run_that_never_resumes_from_checkpoints_is_not_checked(home):
    plan = launch.start(parse_spec(SPEC + "checkpoint: {resume: never}\n"), "dummy").plan
    fake_checkpoint(Path(plan.ckpt_dir), 10, truncate_to=1)
    launch.resume(plan.run_id, "dummy")
