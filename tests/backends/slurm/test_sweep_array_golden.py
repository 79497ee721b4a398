"""A sweep's one job array (hpcgpu/backends/slurm/array.py): the script submitted byte for byte
(golden), --array from the task indices with the %N throttle, and tasks that would need different
requests refused."""

from __future__ import annotations

import pytest

from hpcgpu.backends.slurm.array import array_parameters, array_range, array_script, common_parameters
from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import apply_overrides, parse_spec
from hpcgpu.host.sweep import expand, task_specs
from tests.backends.slurm.test_sbatch_golden import PYTHON, TWO_NODES, sbatch_lines
from tests.helpers.golden import assert_golden
from tests.helpers.plans import plan_for

SWEEP_DIR = "/shared/ada/runs/demo-20250101-000000-abcd"


def task_plans(grid: dict, base: str = TWO_NODES):
    tasks = expand(grid)
    specs = task_specs(parse_spec(base), tasks)
    plans = [plan_for(apply_overrides(s, {"logging.dir": SWEEP_DIR}), backend="slurm", run_id=f"demo-t{t.index}",
                      run_dir=f"{SWEEP_DIR}/{t.dir_name()}", python=PYTHON, cwd="/shared/ada/code")
             for s, t in zip(specs, tasks)]
    return plans, [f"{t.index} ({t.label()})" for t in tasks]


def test_the_2x2_array_script():
    plans, labels = task_plans({"train.lr": [0.001, 0.0003], "train.seed": [1, 2]})
    text = array_script(plans, labels, [0, 1, 2, 3], 2, f"{SWEEP_DIR}/submitit")
    assert_golden("sbatch_sweep_array.sh", text)
    parsed = sbatch_lines(text)
    assert parsed["array"] == "0-3%2"
    # one log per array task and node: %A = the array's job id, %a = the task index
    assert parsed["output"] == f"{SWEEP_DIR}/submitit/%A_%a_0_log.out"
    assert f"--output {SWEEP_DIR}/submitit/%A_%a_%t_log.out" in text
    # the request is the single run's, unchanged
    single = sbatch_lines(plans[0].request["sbatch"])
    assert {k: v for k, v in parsed.items() if k not in ("array", "output")} == \
        {k: v for k, v in single.items() if k != "output"}


def test_a_resumed_sweep_submits_only_its_unfinished_indices():
    plans, labels = task_plans({"train.seed": [1, 2, 3, 4]})
    text = array_script([plans[1], plans[3]], [labels[1], labels[3]], [1, 3], 0, f"{SWEEP_DIR}/submitit")
    assert sbatch_lines(text)["array"] == "1,3"


@pytest.mark.parametrize("indices, expected", [([0], "0"), ([0, 1, 2, 3], "0-3"), ([3, 1, 2, 7, 9, 8], "1-3,7-9"),
                                               ([0, 2, 4], "0,2,4"), ([5, 5, 6], "5-6")])
def test_array_ranges(indices, expected):
    assert array_range(indices) == expected


@pytest.mark.parametrize("parallel, tasks, suffix", [(0, 4, ""), (2, 4, "%2"), (4, 4, ""), (9, 4, "")])
def test_the_throttle_appears_only_when_it_limits(parallel, tasks, suffix):
    params = array_parameters({"additional_parameters": {"requeue": True}}, list(range(tasks)), parallel)
    assert params["additional_parameters"] == {"requeue": True, "array": f"0-{tasks - 1}{suffix}"}
    assert params["map_count"] == tasks


def test_tasks_with_different_requests_cannot_share_one_array():
    plans, labels = task_plans({"resources.nodes": [1, 2]})
    with pytest.raises(UserError, match=r"sweep task 1 \(nodes=2\) changes the Slurm request \(nodes: 1 -> 2\)"):
        common_parameters(plans, labels)
    plans, labels = task_plans({"slurm.partition": ["a", "b"]})
    with pytest.raises(UserError, match="partition: 'a' -> 'b'"):
        common_parameters(plans, labels)
