"""The command a stopped local run prints: on a host, and inside the hpcgpu image under docker/podman."""

from __future__ import annotations

import pytest

from hpcgpu.cli.run_cmd import outcome_line, resume_command

IN_IMAGE = {"HPCGPU_IN_IMAGE": "1"}


@pytest.mark.parametrize("markers, environ, expected", [
    # a host: the run index knows the id
    ((), {}, "hpcgpu run local --resume r1"),
    # a host that is itself a container (these machines have /.dockerenv) but not the image
    ((".dockerenv",), {}, "hpcgpu run local --resume r1"),
    # `docker run ... IMAGE train`: a new container of the image, the run named by its directory
    ((".dockerenv",), IN_IMAGE, "docker run <the same options and image> run local --resume /work/runs/r1"),
    (("run/.containerenv",), IN_IMAGE, "podman run <the same options and image> run local --resume /work/runs/r1"),
    # the image under something else (apptainer exec): the host form
    ((), IN_IMAGE, "hpcgpu run local --resume r1"),
])
def test_resume_command_names_the_engine_the_run_stopped_in(tmp_path, markers, environ, expected):
    for marker in markers:
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).touch()
    assert resume_command("r1", "/work/runs/r1", environ, root=str(tmp_path)) == expected


def test_resume_command_quotes_a_run_dir_for_the_shell(tmp_path):
    (tmp_path / ".dockerenv").touch()
    line = resume_command("r1", "/my work/runs/r1", IN_IMAGE, root=str(tmp_path))
    assert line.endswith("--resume '/my work/runs/r1'")


def test_stopped_and_interrupted_runs_print_the_resume_command():
    assert outcome_line(75, "CMD") == "stopped after a checkpoint; continue with: CMD"
    assert outcome_line(128 + 15, "CMD").endswith("continue from the previous checkpoint with: CMD")
