"""Golden plan.json files: what a node agent and its ranks execute, built by the same function the
CLI calls (the backend's plan) from fixed host facts, for local runs, Slurm, and each container
runtime. A change here changes what runs everywhere: regenerate deliberately and review the diff."""

from __future__ import annotations

import json

import pytest

from hpcgpu.contract.plan import plan_from_dict
from tests.helpers.golden import assert_golden
from tests.helpers.plans import plan_for

RUN = "/home/ada/proj/runs/demo-20250101-000000-abcd"
FACTS = dict(run_id="demo-20250101-000000-abcd", run_dir=RUN, python="/home/ada/venv/bin/python",
             environ={"NCCL_SOCKET_IFNAME": "ib0", "HF_TOKEN": "never-written"})

CASES = {
    "local_cpu": ("local", "resources: {gpus_per_node: 0, procs_per_node: 2}\n", {}),
    "local_gpu_bf16": ("local", "train: {precision: bf16}\nenv: {WANDB_API_KEY: s3cr3t}\n", {"visible_gpus": 4}),
    "local_podman": ("local", "container: {runtime: podman, image: localhost/hpcgpu:test}\n"
                              "resources: {gpus_per_node: 0}\n", {"environ": {"HPCGPU_PODMAN_ARGS": "--runtime runc"}}),
    "local_docker_gpu": ("local", "container: {runtime: docker, image: hpcgpu:latest}\n", {"visible_gpus": 2}),
    "local_apptainer": ("local", "container: {runtime: apptainer, image: /images/hpcgpu.sif}\n"
                                 "resources: {gpus_per_node: 1}\n", {"visible_gpus": 1}),
    "slurm_gpu_2node_apptainer": ("slurm", "resources: {nodes: 2, gpus_per_node: 8, time: '04:00:00'}\n"
                                           "container: {runtime: apptainer, image: /images/hpcgpu.sif}\n", {}),
    "slurm_pyxis": ("slurm", "resources: {nodes: 2, gpus_per_node: 8}\n"
                             "container: {runtime: pyxis, image: 'nvcr.io#nvidia/pytorch:25.01-py3'}\n", {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_json(name):
    backend, spec, facts = CASES[name]
    plan = plan_for(spec, backend=backend, **{**FACTS, **facts})
    text = plan.to_json()
    assert "never-written" not in text and "s3cr3t" not in text  # secrets never reach plan.json
    assert plan_from_dict(json.loads(text)) == plan  # what a node reads back is what the host built
    assert_golden(f"plan_{name}.json", text)
