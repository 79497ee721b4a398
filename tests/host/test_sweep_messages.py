"""The words of every sweep refusal (hpcgpu/host/sweep.py, backends/slurm/array.py), pinned as users
read them (killing the mutation survivors of the first pass), and the edge cases of the pure parts."""

from __future__ import annotations

import pytest

from hpcgpu.backends.slurm.array import common_parameters
from hpcgpu.contract.errors import UserError
from hpcgpu.host.plan import with_parts
from hpcgpu.host.spec import parse_spec
from hpcgpu.host.sweep import SweepTask, _product_size, expand, parse_sweep_options, task_specs
from tests.backends.slurm.test_sweep_array_golden import task_plans


def refusal(call, *args) -> UserError:
    with pytest.raises(UserError) as info:
        call(*args)
    return info.value


def test_sweep_option_refusals_word_for_word():
    e = refusal(parse_sweep_options, ["train.lr"])
    assert (e.message, e.hint) == ("--sweep 'train.lr': expected KEY=V1,V2,... with a dotted spec key, "
                                   "e.g. --sweep train.lr=1e-3,3e-4", "the keys are listed in docs/spec.md")
    e = refusal(parse_sweep_options, ["train.lr=1", "train.lr=2"])
    assert (e.message, e.hint) == ("--sweep train.lr is given twice", "give every value once: --sweep train.lr=A,B,C")
    e = refusal(parse_sweep_options, ["train.lr=1,,2"])
    assert (e.message, e.hint) == ("--sweep train.lr: '1,,2' has an empty value", "separate values by single commas")


def test_the_key_ends_at_the_first_equals_sign():
    assert parse_sweep_options(["env.OPTS=a=b,c"]) == {"env.OPTS": ["a=b", "c"]}


def test_key_refusals_word_for_word_and_upper_case_keys_are_keys():
    e = refusal(expand, {"train..lr": [1]})
    assert (e.message, e.hint) == ("sweep.grid: 'train..lr' is not a dotted spec key (e.g. train.lr)", None)
    e = refusal(expand, {"name": ["a"]})
    assert (e.message, e.hint) == ("sweep.grid: name cannot vary between the tasks of a sweep",
                                   "every task has its own run dir inside the sweep's directory, named by its overrides")
    e = refusal(expand, {"train.seed": list(range(1001))})
    assert e.hint == "sweep fewer values, or split it into several sweeps"
    assert [dict(t.overrides) for t in expand({"env.MY_VAR": ["1", "2"]})] == [{"env.MY_VAR": "1"}, {"env.MY_VAR": "2"}]


def test_the_task_count_is_the_product_of_every_axis():
    assert _product_size({"a": [1, 2], "b": [1, 2, 3]}) == 6
    with pytest.raises(UserError, match="1002 tasks"):
        expand({"a": [1, 2], "b": list(range(501))})


def test_an_invalid_task_message_keeps_only_the_problem():
    e = refusal(task_specs, parse_spec(""), expand({"train.lr": [-1]}))
    assert e.message == ("sweep task 0 (lr=-1) is invalid: invalid spec (1 problem)\n"
                         "  train.lr: Input should be greater than 0")
    assert e.hint == "fix or drop that value; nothing was started"


def test_labels_write_values_as_yaml_would():
    assert SweepTask(0, {"train.tf32": True, "entry.script": None}).label() == "tf32=true,script=null"
    assert SweepTask(0, {"debug.NCCL": "INFO"}).dir_name() == "t0-NCCL=INFO"  # upper case kept


def test_a_key_one_task_sets_and_another_leaves_unset_differs_too():
    plans, labels = task_plans({"train.seed": [1, 2]})
    request = dict(plans[1].request)
    request["sbatch_parameters"] = {**request["sbatch_parameters"], "account": "proj"}  # only the second has it
    plans[1] = with_parts(plans[1], request=request)
    e = refusal(common_parameters, plans, labels)
    assert e.message == ("sweep task 1 (seed=2) changes the Slurm request (account: None -> 'proj'); "
                         "the tasks of one job array share one request")
    assert e.hint == ("sweep only values that leave nodes, GPUs, CPUs, memory, time and partition alone, "
                      "or submit one sweep per request")


def test_a_top_level_key_labels_by_itself():
    assert SweepTask(0, {"secret_env": ["A"]}).label() == "secret_env=[A]"


def test_a_sweep_of_one_task_is_an_array_of_one():
    from hpcgpu.backends.slurm.array import array_script
    from tests.backends.slurm.test_sbatch_golden import sbatch_lines

    plans, labels = task_plans({"train.lr": [0.1]})
    assert sbatch_lines(array_script(plans, labels, [0], 0, "/s/submitit"))["array"] == "0"
