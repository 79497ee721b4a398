"""Golden sbatch scripts and Slurm plans (hpcgpu/backends/slurm/planner.py): what `hpcgpu submit
slurm` submits, byte for byte, and the plan.json it runs.

Built by the same function the CLI calls (the backend's plan) with fixed facts, run directory and
interpreter, so the files are stable; the backend submits exactly this text
(tests/backends/slurm/test_submit.py checks it for a real job).
"""

from __future__ import annotations

import shlex

from hpcgpu.backends.slurm.planner import describe_slurm
from tests.helpers.golden import assert_golden
from tests.helpers.plans import plan_for

RUN_DIR = "/shared/ada/runs/demo-20250101-000000-abcd"
PYTHON = "/shared/ada/venv/bin/python"

ONE_NODE = """
name: llm-pretrain
resources: {nodes: 1, gpus_per_node: 8, cpus_per_task: 64, mem: 480G, time: "1-12:00:00"}
slurm:
  partition: gpu
  account: proj-42
  qos: high
  constraint: h100
  signal_before_s: 300
  extra: {exclusive: true, comment: "it's $(not run) `or this`; \\"quoted\\"", mail_type: END, requeue_hold: false}
env: {NOT_IN_THE_SCRIPT: "$(touch /tmp/pwned)"}
"""

TWO_NODES = """
name: demo
resources: {nodes: 2, gpus_per_node: 0, procs_per_node: 2}
train: {batch_size: 16, seed: 3}
"""


def slurm(text: str):
    return plan_for(text, backend="slurm", run_id="demo-20250101-000000-abcd", run_dir=RUN_DIR, python=PYTHON,
                    cwd="/shared/ada/code")


def script(text: str) -> str:
    return slurm(text).request["sbatch"]


def sbatch_lines(text: str) -> dict[str, str]:
    """#SBATCH --key=value lines -> {key: value} as sbatch reads them (shell-style quoting)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --"):].partition("=")
            out[key] = shlex.split(value)[0] if value else True
    return out


def test_one_node_gpu_script():
    text = script(ONE_NODE)
    assert_golden("sbatch_1node_gpu.sh", text)
    parsed = sbatch_lines(text)
    assert parsed["comment"] == "it's $(not run) `or this`; \"quoted\""  # one word, reaching sbatch unchanged
    assert parsed["time"] == "2160" and parsed["ntasks-per-node"] == "1" and parsed["gpus-per-node"] == "8"
    assert "requeue-hold" not in parsed and parsed["exclusive"] is True
    assert "pwned" not in text  # env values travel in the environment, never in the script


def test_two_node_cpu_script():
    text = script(TWO_NODES)
    assert_golden("sbatch_2node_cpu.sh", text)
    parsed = sbatch_lines(text)
    assert "time" not in parsed  # the partition's default, not submitit's 5 minutes
    assert parsed["cpus-per-task"] == "2"  # a core per rank


PYXIS = """
container: {runtime: pyxis, image: "nvcr.io#nvidia/pytorch:25.01-py3"}
"""


def test_two_node_pyxis_dry_run():
    # pyxis options go to a nested step per node (see pyxis_node_prefix), not to the outer srun
    plan = slurm(TWO_NODES + PYXIS)
    text = describe_slurm(plan)
    assert_golden("sbatch_2node_pyxis_dryrun.txt", text)
    assert plan.node_argv[0] == "python3"  # the image's interpreter; submitit's runner stays on the host
    assert plan.container_prefix[:3] == (PYTHON, "-m", "hpcgpu.backends.slurm.node_step")
    assert plan.request["sbatch"] == script(TWO_NODES)  # the container changes the node command only


def test_two_node_dry_run():
    assert_golden("sbatch_2node_dryrun.txt", describe_slurm(slurm(TWO_NODES)))


def test_two_node_plan_json():
    # the plan.json a 2-node CPU job executes, pinned whole (created=0: fixed facts, no clock)
    assert_golden("plan_slurm_2node_cpu.json", slurm(TWO_NODES).to_json())
