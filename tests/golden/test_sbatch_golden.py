"""Golden sbatch scripts (hpcgpu/slurm_plan.py): what `hpcgpu submit slurm` submits, byte for byte.

Rendered through the plan functions with a fixed run directory and interpreter, so the files are
stable; the backend submits exactly this text (tests/slurm/test_submit.py checks it for a real job).
"""

from __future__ import annotations

import shlex

from golden import assert_golden

from hpcgpu.host.container import ContainerSettings, RunContext, pyxis_srun_args
from hpcgpu.backends.slurm.planner import (build_slurm_plan, describe_slurm, pyxis_node_prefix, render_sbatch, sbatch_parameters,
                               submitit_folder)
from hpcgpu.host.spec import parse_spec

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


def script(text: str) -> str:
    return render_sbatch(sbatch_parameters(parse_spec(text)), submitit_folder(RUN_DIR), PYTHON)


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


def test_two_node_pyxis_dry_run():
    # pyxis options go to a nested step per node (see pyxis_node_prefix), not to the outer srun
    settings = ContainerSettings(runtime="pyxis", image="nvcr.io#nvidia/pytorch:25.01-py3")
    ctx = RunContext(code_dir="/shared/ada/code", run_dir=RUN_DIR, env_names=("HPCGPU_RDZV_ENDPOINT",), slurm=True)
    prefix = pyxis_node_prefix(tuple(pyxis_srun_args(settings, ctx)))
    plan = build_slurm_plan(parse_spec(TWO_NODES), run_id="demo-20250101-000000-abcd", run_dir=RUN_DIR,
                            python=PYTHON, user_env={}, container_prefix=prefix)
    text = describe_slurm(plan)
    assert_golden("sbatch_2node_pyxis_dryrun.txt", text)
    assert plan.node_argv[0] == "python3"  # the image's interpreter; submitit's runner stays on the host
    assert plan.extra["sbatch"] == script(TWO_NODES)


def test_two_node_dry_run():
    plan = build_slurm_plan(parse_spec(TWO_NODES), run_id="demo-20250101-000000-abcd", run_dir=RUN_DIR,
                            python=PYTHON, user_env={})
    assert_golden("sbatch_2node_dryrun.txt", describe_slurm(plan))
