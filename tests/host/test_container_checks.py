"""host.container's own checks and probes, called directly with input that skipped spec validation:
mount paths, characters a runtime's mount syntax splits on, env names, apptainer's clean environment,
the user a container runs as, and check_runtime's probes (faked processes) with their messages."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.container import (
    ContainerSettings,
    RunContext,
    check_runtime,
    container_prefix,
    env_names,
    mount_dirs,
    pyxis_srun_args,
)


def settings(runtime: str, **over) -> ContainerSettings:
    return ContainerSettings(runtime=runtime, image=over.pop("image", "img"), **over)


CTX = RunContext(code_dir="/c", run_dir="/r")


class FakeRun:
    """subprocess.run stand-in: answers per argv[:3] prefix, records every call with its kwargs."""

    def __init__(self, answers=None, default=(0, "", "")):
        self.answers, self.default, self.calls = answers or {}, default, []

    def __call__(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        rc, out, err = self.answers.get(tuple(argv[:3]), self.default)
        return subprocess.CompletedProcess(argv, rc, out, err)


def found(name):
    return f"/usr/bin/{name}"


# --- ContainerSettings.from_spec -------------------------------------------------------------------

def test_from_spec_copies_every_field_as_tuples():
    section = SimpleNamespace(runtime="docker", image="img:1", binds=["/data:/data"], extra_args=["--shm-size=1g"],
                              env_passthrough=["WANDB_PROJECT"])
    got = ContainerSettings.from_spec(section)
    assert got == ContainerSettings("docker", "img:1", ("/data:/data",), ("--shm-size=1g",), ("WANDB_PROJECT",))


def test_from_spec_without_env_passthrough_passes_none_further():
    section = SimpleNamespace(runtime="podman", image="img", binds=[], extra_args=[])
    assert ContainerSettings.from_spec(section).env_passthrough == ()


# --- mounts ----------------------------------------------------------------------------------------

def test_an_empty_directory_is_skipped_and_the_others_still_mounted():
    assert mount_dirs(RunContext(code_dir="", run_dir="/r", ckpt_dir="/ck")) == ["/r", "/ck"]


def test_a_relative_mount_names_the_path_and_asks_for_absolute_ones():
    with pytest.raises(UserError) as info:
        mount_dirs(RunContext(code_dir="/c", run_dir="runs/1"))
    assert info.value.message == "container mount 'runs/1' is not an absolute path"
    assert info.value.hint == "pass absolute paths"


@pytest.mark.parametrize("runtime, path, chars", [
    ("apptainer", "/a:b,c", ", :"), ("docker", "/a:b", ":"), ("podman", "/x:y", ":"), ("pyxis", "/a,b:c", ", :"),
])
def test_a_path_the_mount_syntax_splits_names_runtime_path_and_characters(runtime, path, chars):
    ctx = RunContext(code_dir=path, run_dir="/r")
    with pytest.raises(UserError) as info:
        pyxis_srun_args(settings(runtime), ctx) if runtime == "pyxis" else container_prefix(settings(runtime), ctx)
    assert info.value.message == f"{runtime} cannot mount {path!r}: its mount syntax splits on {chars}"
    assert info.value.hint == "move or symlink the directory to a path without those characters"


def test_a_pyxis_bind_with_a_comma_is_refused():
    with pytest.raises(UserError) as info:
        pyxis_srun_args(settings("pyxis", binds=("/a,b:/a",)), CTX)
    assert info.value.message.startswith("pyxis cannot mount '/a,b:/a'")


@pytest.mark.parametrize("runtime", ["apptainer", "docker", "podman", "pyxis"])
def test_ordinary_characters_in_paths_are_mounted(runtime):
    ctx = RunContext(code_dir="/data/XX_Project-1", run_dir="/r/X")
    binds = ("/scratch/XX:/scratch/XX",) if runtime != "pyxis" else ("/scratch/XX:/scratch/XX",)
    s = settings(runtime, binds=binds)
    argv = pyxis_srun_args(s, ctx) if runtime == "pyxis" else container_prefix(s, ctx)
    assert any("/data/XX_Project-1" in a for a in argv) and any("/scratch/XX" in a for a in argv)


# --- env names, apptainer, user --------------------------------------------------------------------

def test_a_name_with_a_value_is_refused_with_the_hint():
    with pytest.raises(UserError) as info:
        env_names(settings("docker", env_passthrough=("TOKEN=abc",)), CTX, scheduler_names=False)
    assert info.value.message == "environment name 'TOKEN=abc' is not a bare name"
    assert info.value.hint == "give names; values come from the environment"


def test_apptainer_clean_environment_refusal_says_why_and_what_to_do():
    with pytest.raises(UserError) as info:
        container_prefix(settings("apptainer", extra_args=("--cleanenv",)), CTX)
    assert info.value.message == ("container.extra_args asks apptainer for a clean environment, "
                                  "which drops hpcgpu's variables")
    assert info.value.hint.startswith("remove --cleanenv/--containall")
    assert info.value.hint.endswith("(set variables for the container in the spec's env: instead)")


def test_apptainer_machine_args_from_the_environment_go_before_the_image():
    argv = container_prefix(settings("apptainer", image="/i.sif"), CTX, {"HPCGPU_APPTAINER_ARGS": "--writable-tmpfs"})
    assert argv[-2:] == ["--writable-tmpfs", "/i.sif"]


def test_docker_user_without_a_group_uses_the_uid_as_group():
    argv = container_prefix(settings("docker"), RunContext(code_dir="/c", run_dir="/r", uid=1234))
    i = argv.index("--user")
    assert argv[i + 1] == "1234:1234"


def test_pyxis_passes_no_scheduler_names():
    ctx = RunContext(code_dir="/c", run_dir="/r", env_names=("HPCGPU_RUN_DIR",), scheduler_env_names=("SLURM_JOB_ID",))
    assert "--container-env=HPCGPU_RUN_DIR" in pyxis_srun_args(settings("pyxis"), ctx)


def test_an_unknown_runtime_lists_the_known_ones():
    with pytest.raises(UserError) as info:
        container_prefix(settings("lxc"), CTX)
    assert info.value.message == "container.runtime 'lxc' is not one of apptainer, docker, podman, pyxis"


# --- check_runtime ---------------------------------------------------------------------------------

def test_check_runtime_refuses_an_unknown_runtime_before_probing():
    asked = []
    with pytest.raises(UserError) as info:
        check_runtime("lxc", "img", which=lambda n: asked.append(n) or "/bin/x", run=FakeRun())
    assert info.value.message == "container.runtime 'lxc' is not one of apptainer, docker, podman, pyxis"
    assert asked == []


@pytest.mark.parametrize("runtime, binary", [("pyxis", "srun"), ("docker", "docker"), ("podman", "podman"),
                                             ("apptainer", "apptainer")])
def test_check_runtime_looks_for_the_runtimes_binary(runtime, binary):
    asked = []
    with pytest.raises(UserError) as info:
        check_runtime(runtime, "img", which=lambda n: asked.append(n), run=FakeRun())
    assert asked == [binary]
    assert info.value.message == f"container runtime {runtime!r} needs `{binary}`, which is not on PATH"


def test_a_missing_sif_says_how_to_build_it(tmp_path):
    with pytest.raises(UserError) as info:
        check_runtime("apptainer", str(tmp_path / "x.sif"), which=found)
    assert info.value.hint == "build it: make sif (see containers/hpcgpu.def)"


def test_pyxis_probe_asks_srun_for_its_help_and_explains_a_missing_plugin():
    run = FakeRun(default=(0, "Usage: srun [OPTIONS...]", ""))
    with pytest.raises(UserError) as info:
        check_runtime("pyxis", "img", which=found, run=run)
    assert run.calls[0][0] == ["srun", "--help"]
    assert info.value.message == "srun has no --container-image: the pyxis plugin is not installed here"
    assert "https://github.com/NVIDIA/pyxis" in info.value.hint


def test_probes_are_bounded_and_captured_as_text():
    run = FakeRun()
    check_runtime("podman", "img", which=found, run=run)
    assert run.calls[0][1] == {"capture_output": True, "text": True, "timeout": 60, "check": False}


def test_docker_probe_inspects_the_image_id():
    run = FakeRun()
    check_runtime("docker", "hpcgpu:1", which=found, run=run)
    assert run.calls == [(["docker", "image", "inspect", "--format", "{{.Id}}", "hpcgpu:1"],
                          {"capture_output": True, "text": True, "timeout": 60, "check": False})]


@pytest.mark.parametrize("runtime, hint", [("docker", "is the docker daemon running, and may you use it?"),
                                           ("podman", "see `podman info`")])
def test_a_broken_runtime_is_told_apart_from_a_missing_image(runtime, hint):
    run = FakeRun(default=(125, "", "  permission denied\n"))
    with pytest.raises(UserError) as info:
        check_runtime(runtime, "img", which=found, run=run)
    assert info.value.message == f"{runtime} cannot inspect images: permission denied"
    assert info.value.hint == hint


def test_a_broken_runtime_without_a_message_gives_its_exit_status():
    with pytest.raises(UserError) as info:
        check_runtime("podman", "img", which=found, run=FakeRun(default=(125, "", "")))
    assert info.value.message == "podman cannot inspect images: exit 125"


@pytest.mark.parametrize("runtime, run", [("podman", FakeRun(default=(1, "", ""))),
                                          ("docker", FakeRun(default=(1, "", "Error: No such image: img")))])
def test_a_missing_image_says_how_to_get_it(runtime, run):
    with pytest.raises(UserError) as info:
        check_runtime(runtime, "img", which=found, run=run)
    assert info.value.message == f"{runtime} image 'img' does not exist here"
    assert info.value.hint == f"{runtime} pull img, or build it: make image / make image-test"


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_a_container_of_the_run_that_still_exists_is_refused(runtime):
    run = FakeRun()  # the image exists, and so does the container
    with pytest.raises(UserError) as info:
        check_runtime(runtime, "img", which=found, run=run, container_name="hpcgpu-demo-1")
    assert run.calls[-1][0] == [runtime, "container", "inspect", "--format", "{{.State.Status}}", "hpcgpu-demo-1"]
    assert "container hpcgpu-demo-1 of this run still exists" in info.value.message
    assert f"{runtime} stop -t 120 hpcgpu-demo-1" in info.value.hint


def test_no_container_of_that_name_lets_the_run_start():
    run = FakeRun(answers={("podman", "container", "inspect"): (125, "", "no such container")})
    check_runtime("podman", "img", which=found, run=run, container_name="hpcgpu-demo-1")
    assert [c[0][:3] for c in run.calls] == [["podman", "image", "exists"], ["podman", "container", "inspect"]]
