"""The Slurm planner's own checks on values that reach the sbatch script or the srun line.

The spec validator refuses most of these values first; these tests hand the planner's functions
values that skipped validation (a Spec copied without validating, or a direct call), so each
defence is tested by itself: a newline in a value refused with an error naming the key (a newline
would end the #SBATCH line and bash would run the rest; docs/slurm.md, "The script is safe to
generate"), and the reserved options refused with the key to use instead.
"""

from __future__ import annotations

import pytest

from hpcgpu.backends.slurm.planner import (_extra_options, check_run_dir, check_value, pyxis_node_prefix,
                                           render_sbatch, sbatch_parameters, slurm_plan, valid_job_id)
from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import apply_overrides, parse_spec
from tests.helpers.plans import facts

RUN_DIR = "/shared/runs/t-1"
EVIL = "debug\ntouch /tmp/pwned #"


def spec(**over):
    return apply_overrides(parse_spec(""), {"resources.gpus_per_node": 0, **over})


def unvalidated_slurm(**values):
    """A spec whose slurm: section holds values the spec validator never saw."""
    s = spec()
    return s.model_copy(update={"slurm": s.slurm.model_copy(update=values)})


def refusal(call) -> UserError:
    with pytest.raises(UserError) as info:
        call()
    return info.value


# --- check_value: the message a user reads ---------------------------------------------------------


def test_a_value_with_a_newline_is_refused_naming_the_key_the_danger_and_the_fix():
    err = refusal(lambda: check_value("slurm.account", "a\nb"))
    assert err.message.startswith("slurm.account: 'a\\nb' ")  # the key, then the value as Python shows it
    assert "newline" in err.message
    assert "#SBATCH line" in err.message and err.message.endswith("would run as a shell command")
    assert err.hint is not None and "slurm.account" in err.hint and "single-line" in err.hint


def test_a_single_line_value_passes_unchanged():
    assert check_value("slurm.account", "proj-42 $(x) 'y'") == "proj-42 $(x) 'y'"
    assert check_value("slurm.extra.exclusive", True) is True


# --- the run directory ----------------------------------------------------------------------------


def test_a_run_dir_with_a_newline_is_refused_naming_logging_dir():
    err = refusal(lambda: check_run_dir("/runs/a\nb"))
    assert err.message.startswith("logging.dir (the run directory): ")


def test_a_run_dir_with_a_percent_is_refused_saying_slurm_expands_it():
    err = refusal(lambda: check_run_dir("/runs/%j"))
    assert err.message.startswith("logging.dir (the run directory) '/runs/%j' contains '%'")
    assert err.message.endswith("which Slurm expands in log file names (%j = job id)")
    assert err.hint == "choose a logging.dir without '%'"


def test_a_plain_run_dir_passes():
    assert check_run_dir("/shared/runs/t-1") == "/shared/runs/t-1"


# --- slurm.extra ----------------------------------------------------------------------------------


def test_extra_option_names_get_dashes_for_underscores():
    assert _extra_options({"mail_type": "END", "exclusive": True}) == {"mail-type": "END", "exclusive": True}


def test_a_reserved_option_spelled_with_underscores_is_still_refused():
    # docs/slurm.md: `slurm.extra: {ntasks_per_node: 8}` is refused (it breaks one task per node)
    err = refusal(lambda: _extra_options({"ntasks_per_node": 8}))
    assert err.message.startswith("slurm.extra.ntasks_per_node: ")
    assert "--ntasks-per-node" in err.message


@pytest.mark.parametrize("key, instead", [("time", "resources.time"), ("partition", "slurm.partition"),
                                          ("job_name", "name / --name"), ("no_requeue", "slurm.max_timeout_requeues")])
def test_a_reserved_option_is_refused_with_the_key_to_use_instead(key, instead):
    err = refusal(lambda: _extra_options({key: "x"}))
    assert err.hint is not None and instead in err.hint


def test_an_extra_value_with_a_newline_is_refused_by_the_planner_itself():
    err = refusal(lambda: _extra_options({"comment": "ok\ntouch /tmp/pwned"}))
    assert err.message.startswith("slurm.extra.comment: ")


def test_an_unvalidated_extra_value_never_reaches_the_parameters():
    s = unvalidated_slurm(extra={"comment": "ok\rtouch /tmp/pwned"})
    err = refusal(lambda: sbatch_parameters(s, 1, 0, cpus=1))
    assert err.message.startswith("slurm.extra.comment: ")


# --- partition, account, qos, constraint ----------------------------------------------------------


@pytest.mark.parametrize("key", ["account", "qos", "constraint"])
def test_sbatch_parameters_refuse_an_unvalidated_newline_naming_the_key(key):
    err = refusal(lambda: sbatch_parameters(unvalidated_slurm(**{key: EVIL}), 1, 0, cpus=1))
    assert err.message.startswith(f"slurm.{key}: ")


def test_the_plan_refuses_an_unvalidated_partition_naming_the_key():
    err = refusal(lambda: slurm_plan(unvalidated_slurm(partition=EVIL), facts(python="/venv/bin/python"),
                                     run_id="t-1", run_dir=RUN_DIR))
    assert err.message.startswith("slurm.partition: ")


# --- srun arguments and the interpreter -----------------------------------------------------------


def test_srun_arguments_follow_the_steps_own_flags():
    got = sbatch_parameters(spec(), 1, 0, srun_args=("--container-image=img",), cpus=3)
    assert got["srun_args"] == ["--kill-on-bad-exit=1", "--cpus-per-task=3", "--container-image=img"]


def test_an_srun_argument_with_a_newline_is_refused_naming_the_container():
    err = refusal(lambda: sbatch_parameters(spec(), 1, 0, srun_args=("--container-image=a\nid",), cpus=1))
    assert err.message.startswith("container (srun argument): ")


def test_a_pyxis_argument_with_a_newline_is_refused_naming_the_container():
    err = refusal(lambda: pyxis_node_prefix(("--container-image=a\nid",), "/venv/bin/python", 4))
    assert err.message.startswith("container (pyxis srun argument): ")


def test_the_nested_pyxis_step_asks_for_cpus_only_when_it_knows_them():
    args = ("--container-image=img",)
    assert pyxis_node_prefix(args, "/venv/bin/python", None) == (
        "/venv/bin/python", "-m", "hpcgpu.backends.slurm.node_step", "--container-image=img", "--")
    assert pyxis_node_prefix(args, "/venv/bin/python", 12) == (
        "/venv/bin/python", "-m", "hpcgpu.backends.slurm.node_step", "--cpus-per-task=12", "--container-image=img", "--")


def test_the_renderer_refuses_an_interpreter_path_with_a_newline():
    params = sbatch_parameters(spec(), 1, 0, cpus=1)
    err = refusal(lambda: render_sbatch(params, RUN_DIR + "/submitit", "/venv/bin/python\nrm -rf ~"))
    assert err.message.startswith("python: ")


def test_the_plan_refuses_an_interpreter_path_with_a_newline():
    err = refusal(lambda: slurm_plan(spec(), facts(python="/venv/bin/python\nid"), run_id="t-1", run_dir=RUN_DIR))
    assert err.message.startswith("python: ")


def test_a_bad_job_id_is_named_in_the_error():
    err = refusal(lambda: valid_job_id("123;rm"))
    assert "'123;rm'" in err.message and "Slurm job id" in err.message


def test_the_renderer_quotes_a_run_dir_and_interpreter_with_spaces_and_shell_syntax():
    import shlex

    folder = "/runs/a b $(touch pwned) 'q'/submitit"
    python = "/opt/my venv/bin/python"
    text = render_sbatch(sbatch_parameters(spec(), 1, 0, cpus=1), folder, python)
    srun = shlex.split(next(line for line in text.splitlines() if line.startswith("srun ")))
    assert srun[-5:] == [python, "-u", "-m", "submitit.core._submit", folder]  # each path one word, as written
    [output] = [line for line in text.splitlines() if line.startswith("#SBATCH --output=")]
    assert shlex.split(output.split("=", 1)[1]) == [f"{folder}/%j_0_log.out"]
