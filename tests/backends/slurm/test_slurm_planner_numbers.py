"""The numbers the Slurm planner derives: time limits, CPUs per task, the fair share of a node,
memory in MB, the agent's grace, and which partition row counts (docs/slurm.md: "CPUs.",
"Checked before submitting"; the planner's docstrings)."""

from __future__ import annotations

import pytest

from hpcgpu.backends.slurm.planner import (UNLIMITED_MIN, _mem_mb, cpus_per_task, default_partition,
                                           fair_cpus_per_gpu, node_grace_s, partition_fit_problem,
                                           sbatch_parameters, slurm_plan, submitit_folder, time_limit_minutes,
                                           time_to_minutes)
from hpcgpu.host.spec import apply_overrides, parse_spec
from tests.helpers.plans import facts

RUN_DIR = "/shared/runs/t-1"


def spec(**over):
    return apply_overrides(parse_spec(""), over)


def plan(s, **facts_over):
    return slurm_plan(s, facts(python="/venv/bin/python", **facts_over), run_id="t-1", run_dir=RUN_DIR)


# --- time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, minutes", [("0:61", 2), ("10:61", 12), ("00:00:61", 2), ("0:60", 1),
                                           ("1-00:00:61", 1442)])
def test_seconds_are_rounded_up_to_whole_minutes(text, minutes):
    assert time_to_minutes(text) == minutes


def test_the_partitions_maximum_applies_when_it_has_no_default():
    rows = ("long|2|(null)|32|128000|n/a|2-00:00:00",)
    assert time_limit_minutes({}, "long", rows) == 2880


def test_a_partition_with_neither_default_nor_maximum_is_unlimited():
    rows = ("open|2|(null)|32|128000|n/a|n/a",)
    assert time_limit_minutes({}, "open", rows) == UNLIMITED_MIN


def test_rows_with_only_the_fit_columns_mean_unlimited():
    assert time_limit_minutes({}, "debug", ("debug*|2|(null)|4|8000",)) == UNLIMITED_MIN


def test_only_the_default_marker_is_stripped_from_partition_names():
    rows = ("gpuX*|4|gpu:h100:8|64|512000|30:00|1-00:00:00", "cpu|2|(null)|32|128000|n/a|infinite")
    assert default_partition(rows) == "gpuX"
    assert time_limit_minutes({}, "gpuX", rows) == 30
    assert fair_cpus_per_gpu("gpuX", rows) == 8
    assert partition_fit_problem(1, 16, "gpuX", list(rows)) == \
        "asked for 16 GPUs per node, nodes of partition 'gpuX' have at most 8"
    assert partition_fit_problem(1, 0, "nope", ["hpcX*|1|(null)"]) == "partition 'nope' does not exist (partitions: hpcX)"


def test_no_partitions_known_is_said_as_none():
    assert partition_fit_problem(1, 0, "gpu", []) == "partition 'gpu' does not exist (partitions: none)"


# --- CPUs -----------------------------------------------------------------------------------------


def test_a_one_gpu_job_gets_eight_cpus_not_one():
    assert cpus_per_task(spec(**{"resources.gpus_per_node": 1}), 1, 1) == 8
    assert sbatch_parameters(spec(**{"resources.gpus_per_node": 1}), 1, 1)["cpus_per_task"] == 8


def test_sbatch_parameters_without_cpus_use_eight_per_gpu_rank():
    # docstring: without cpus, the default with no partition cap
    assert sbatch_parameters(spec(**{"resources.gpus_per_node": 4}), 4, 4)["cpus_per_task"] == 32
    assert sbatch_parameters(spec(**{"resources.gpus_per_node": 0, "resources.procs_per_node": 3}), 3, 0)[
        "cpus_per_task"] == 3


def test_a_one_gpu_job_asks_for_its_gpu():
    got = sbatch_parameters(spec(**{"resources.gpus_per_node": 1}), 1, 1, cpus=8)
    assert got["gpus_per_node"] == 1
    assert "gpus_per_node" not in sbatch_parameters(spec(**{"resources.gpus_per_node": 0}), 2, 0, cpus=2)


def test_the_fair_share_reads_four_column_rows():
    assert fair_cpus_per_gpu("gpu", ("gpu*|4|gpu:h100:8|64",)) == 8


def test_the_fair_share_rounds_down_to_whole_cpus():
    got = fair_cpus_per_gpu("gpu", ("gpu|1|gpu:3|16|64000",))
    assert got == 5 and isinstance(got, int)


def test_the_fair_share_is_at_least_one_cpu():
    assert fair_cpus_per_gpu("gpu", ("gpu|1|gpu:8|8|64000",)) == 1
    assert fair_cpus_per_gpu("gpu", ("gpu|1|gpu:8|4|64000",)) == 1


def test_the_fair_share_ignores_other_partitions_wherever_they_are_listed():
    rows = ("small|1|gpu:8|8|64000", "gpu|4|gpu:h100:8|64|512000", "tiny|1|gpu:4|4|64000")
    assert fair_cpus_per_gpu("gpu", rows) == 8


def test_the_fair_share_is_unknown_for_short_rows_or_plus_counts():
    assert fair_cpus_per_gpu("gpu", ("gpu|4|gpu:h100:8",)) is None
    assert fair_cpus_per_gpu("gpu", ("gpu|4|gpu:h100:8|96+|512000",)) is None


# --- the fit check inside the plan ----------------------------------------------------------------


def test_the_plan_checks_the_cpus_it_asks_for_against_the_partition():
    rows = ("cpu*|2|(null)|32|128000|n/a|infinite",)
    got = plan(spec(**{"resources.gpus_per_node": 0, "resources.cpus_per_task": 96}), partitions=rows)
    assert got.request["fit_problem"].startswith("asked for 96 CPUs per node")
    assert "at most 32" in got.request["fit_problem"]


def test_the_plan_checks_the_memory_it_asks_for_against_the_partition():
    rows = ("cpu*|2|(null)|32|128000|n/a|infinite",)
    got = plan(spec(**{"resources.gpus_per_node": 0, "resources.mem": "200G"}), partitions=rows)
    assert got.request["fit_problem"] == "asked for 200G of memory per node, nodes of partition 'cpu' have at most 128000M"


def test_the_spec_partition_is_the_plans_partition():
    got = plan(spec(**{"resources.gpus_per_node": 0, "slurm.partition": "cpu"}),
               partitions=("gpu*|4|gpu:h100:8|64|512000|1:00:00|n/a", "cpu|2|(null)|32|128000|n/a|infinite"))
    assert got.request["partition"] == "cpu"


def test_without_sinfo_nothing_is_judged_even_with_a_partition_named():
    got = plan(spec(**{"resources.gpus_per_node": 0, "slurm.partition": "cpu"}))
    assert got.request["fit_problem"] == "" and got.request["time_limit_min"] is None


# --- memory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mem, mb", [("8000", 8000), ("512M", 512), ("64G", 65536), ("1T", 1048576),
                                     ("2T", 2097152), ("2048K", 2), ("1025K", 2), ("1K", 1)])
def test_memory_is_counted_in_mb_as_slurm_counts_it(mem, mb):
    assert _mem_mb(mem) == mb


def test_a_memory_request_in_kilobytes_that_fits_is_not_refused():
    assert partition_fit_problem(1, 0, "debug", ["debug*|2|(null)|4|8000"], mem="4096000K") == ""


# --- grace and paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_before_s", [10, 20])
def test_the_agent_gets_at_least_five_seconds_of_grace(signal_before_s):
    s = spec(**{"slurm.signal_before_s": signal_before_s, "distributed.stop_grace_s": 60})
    assert node_grace_s(s) == 5


def test_submitits_folder_is_inside_the_run_dir():
    assert submitit_folder("/shared/runs/t-1") == "/shared/runs/t-1/submitit"
