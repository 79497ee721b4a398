"""Golden dry-run text (`hpcgpu run local --dry-run`, host.plan.describe_plan): the run line, the node
command, the environment added for every rank (secrets redacted, other values shell-quoted), the debug
variables with their reasons, and the rank table. Regenerate deliberately and review the diff."""

from __future__ import annotations

import pytest

from hpcgpu.host.plan import describe_plan
from tests.helpers.golden import assert_golden
from tests.helpers.plans import plan_for

RUN = "/home/ada/proj/runs/demo-20250101-000000-abcd"
FACTS = dict(run_id="demo-20250101-000000-abcd", run_dir=RUN, python="/home/ada/venv/bin/python")

CASES = {
    "local_cpu_script": ("local",
                         "entry: {script: train.py, args: [--lr, '0.1', --name, my run]}\n"
                         "resources: {gpus_per_node: 0, procs_per_node: 2}\n"
                         "env: {WANDB_API_KEY: s3cr3t, RUN_NOTE: two words}\n",
                         {"environ": {"HF_TOKEN": "never-shown"}}),
    "local_gpu_module_debug": ("local",
                               "entry: {module: mypkg.train, args: [--epochs, '3']}\n"
                               "debug: {nccl: info, torch_distributed: detail}\n"
                               "train: {precision: bf16}\n",
                               {"visible_gpus": 2, "environ": {"OMP_NUM_THREADS": "8"}}),
    "local_podman_task": ("local", "container: {runtime: podman, image: localhost/hpcgpu:test}\n"
                                   "resources: {gpus_per_node: 0}\n", {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dry_run_text(name):
    backend, spec, facts = CASES[name]
    text = describe_plan(plan_for(spec, backend=backend, **{**FACTS, **facts}))
    assert "s3cr3t" not in text and "never-shown" not in text
    assert_golden(f"dryrun_{name}.txt", text)
