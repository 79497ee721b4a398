"""gpus_per_node 'all' under Slurm (issue 13, item 5): the compute nodes' GPUs come from sinfo; a dry
run without sinfo renders with an assumption it states, and a submission refuses to guess."""

from __future__ import annotations

import pytest

from hpcgpu.backends.slurm import backend as slurm_backend
from hpcgpu.backends.slurm.planner import describe_slurm, gpus_of_every_node
from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import parse_spec
from tests.helpers.plans import plan_for

#: sinfo -h -o '%P|%D|%G|%c|%m|%L|%l': a mixed GPU partition (8- and 4-GPU nodes) and a CPU one
ROWS = ("gpu*|4|gpu:h100:8(S:0-1)|64|512000|1:00:00|2-00:00:00",
        "gpu*|2|gpu:a100:4|32|256000|1:00:00|2-00:00:00",
        "cpu|2|(null)|32|128000|n/a|infinite")


def plan(text: str = "", rows: tuple[str, ...] = ROWS):
    return plan_for(parse_spec(text), backend="slurm", run_id="t-1", run_dir="/shared/runs/t-1",
                    python="/venv/bin/python", partitions=rows)


def test_all_is_the_fewest_gpus_a_node_of_the_partition_has():
    assert gpus_of_every_node("gpu", ROWS) == (4, "")  # 8 would not fit the 4-GPU nodes
    assert gpus_of_every_node("cpu", ROWS) == (0, "")  # no GPUs: CPU ranks


def test_the_default_spec_plans_every_gpu_of_the_default_partition():
    p = plan()
    assert (p.nproc_per_node, p.device_type) == (4, "cuda")
    assert "#SBATCH --gpus-per-node=4\n" in p.request["sbatch"]
    assert p.request["assumed"] == ""


def test_a_cpu_partition_gives_cpu_ranks():
    p = plan("slurm: {partition: cpu}\nresources: {procs_per_node: 3}\n")
    assert (p.nproc_per_node, p.device_type) == (3, "cpu")


@pytest.mark.parametrize("rows, partition", [((), ""), (ROWS, "slurm: {partition: nosuch}\n")])
def test_without_sinfo_a_dry_run_assumes_eight_and_says_so(rows, partition):
    p = plan(partition, rows=rows)
    assert (p.nproc_per_node, p.device_type) == (8, "cuda")
    assert "taken as 8 GPUs per node" in p.request["assumed"] and "--gpus-per-node N" in p.request["assumed"]
    assert "note: assumed resources.gpus_per_node 'all' taken as 8" in describe_slurm(p)


def test_a_count_is_never_an_assumption():
    p = plan("resources: {gpus_per_node: 2}\n", rows=())
    assert p.request["assumed"] == "" and p.nproc_per_node == 2
    assert "assumed" not in describe_slurm(p)


def test_a_submission_refuses_an_assumed_gpu_count(monkeypatch):
    monkeypatch.setattr(slurm_backend, "require_slurm", lambda: None)  # as if sbatch answered
    with pytest.raises(UserError) as info:
        slurm_backend.SlurmBackend().preflight(plan(rows=()))
    assert info.value.message.startswith("not submitted: resources.gpus_per_node 'all' taken as 8")


def test_the_assumption_is_said_in_full():
    assert gpus_of_every_node(None, ()) == (8, (
        "resources.gpus_per_node 'all' taken as 8 GPUs per node: the compute nodes' GPUs are not known here "
        "(no sinfo answer for the partition); give --gpus-per-node N"))


def test_a_default_partition_whose_name_ends_in_x_is_still_found():
    # only the '*' sinfo puts after the default partition is dropped, not the name's own letters
    assert gpus_of_every_node("boxX", ("boxX*|2|gpu:2|8|1000",)) == (2, "")


def test_rows_with_the_gres_column_are_enough_and_shorter_ones_are_not():
    assert gpus_of_every_node("gpu", ("gpu*|4|gpu:4",)) == (4, "")  # %P|%D|%G: three columns suffice
    assert gpus_of_every_node("gpu", ("gpu*|4",))[0] == 8  # no GRES column: not known, assumed
