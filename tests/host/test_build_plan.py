"""build_plan is pure: layouts, devices and backends per rank, GPU requests that cannot be met,
the environment, the checkpoint directory, redaction."""

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import REDACTED
from hpcgpu.host.plan import checkpoint_dir, describe_plan, node_layout, process_group_backend
from hpcgpu.host.spec import apply_overrides, parse_spec
from tests.helpers.plans import plan_for


def local(text="", visible=0, env=None, **over):
    spec = apply_overrides(parse_spec(text), over)
    return plan_for(spec, run_id="r-1", run_dir="/runs/r-1", visible_gpus=visible, environ=env or {})


@pytest.mark.parametrize(
    "gpus, procs, strategy, visible, expected",
    [
        ("all", 2, "ddp", 0, (2, "cpu", 0)),
        ("all", 2, "ddp", 4, (4, "cuda", 4)),
        (0, 3, "ddp", 8, (3, "cpu", 0)),
        (2, 2, "fsdp", 8, (2, "cuda", 2)),
        ("all", 2, "dp", 4, (1, "cuda", 4)),
    ],
)
def test_node_layout(gpus, procs, strategy, visible, expected):
    spec = apply_overrides(parse_spec(""), {"resources.gpus_per_node": gpus, "resources.procs_per_node": procs, "train.strategy": strategy})
    got = node_layout(spec, visible)
    assert (got.nproc, got.device, got.gpus) == expected


def test_cpu_ranks_on_a_gpu_machine_are_planned_cpu_and_gloo():
    # the defect this contract fixes: --nproc 2 on a GPU box must not take cuda:0/cuda:1 with NCCL
    plan = local(visible=8, **{"resources.gpus_per_node": 0})
    assert [(r.device, r.backend) for r in plan.ranks] == [("cpu", "gloo"), ("cpu", "gloo")]
    assert plan.process_group_backend == "gloo"


def test_gpu_ranks_get_one_device_each_and_nccl():
    plan = local(visible=4)
    assert [(r.rank, r.local_rank, r.device, r.backend) for r in plan.ranks] == [
        (i, i, f"cuda:{i}", "nccl") for i in range(4)]
    assert plan.device_of(3) == "cuda:3" and plan.gpus_per_node == 4


def test_process_group_backend_is_decided_never_auto():
    assert process_group_backend("auto", "cuda") == "nccl" and process_group_backend("auto", "cpu") == "gloo"
    assert process_group_backend("gloo", "cuda") == "gloo"
    with pytest.raises(UserError, match="nccl needs GPUs"):
        local(**{"distributed.backend": "nccl"})


def test_more_gpus_than_visible_suggests_nproc():
    with pytest.raises(UserError) as info:
        local(visible=0, **{"resources.gpus_per_node": 4})
    assert "asked for 4 GPU(s)" in str(info.value) and "--nproc" in str(info.value)


def test_all_gpus_on_unknown_nodes_needs_a_count():
    with pytest.raises(UserError, match="gpus-per-node"):
        node_layout(parse_spec(""), None)


def test_fp16_on_cpu_is_refused():
    with pytest.raises(UserError, match="train.precision is fp16"):
        local("train: {precision: fp16}\n", visible=0)


def test_rank_table_two_nodes():
    plan = plan_for("resources: {nodes: 2, gpus_per_node: 2}\n", backend="slurm")
    assert [(r.rank, r.node, r.local_rank, r.device) for r in plan.ranks] == [
        (0, 0, 0, "cuda:0"), (1, 0, 1, "cuda:1"), (2, 1, 0, "cuda:0"), (3, 1, 1, "cuda:1")]


def test_plan_pins_the_resolved_layout():
    plan = local(visible=3)
    assert plan.spec["resources"]["gpus_per_node"] == 3 and plan.world_size == 3


def test_the_checkpoint_dir_is_absolute_and_decided_once():
    assert checkpoint_dir(parse_spec(""), "/home/ada", "/runs/r-1") == "/runs/r-1/checkpoints"
    assert checkpoint_dir(parse_spec("checkpoint: {dir: ../ckpt}\n"), "/home/ada/proj", "/runs/r") == "/home/ada/ckpt"
    plan = plan_for("checkpoint: {dir: ckpt}\n", cwd="/data/ada")
    assert plan.ckpt_dir == plan.env["HPCGPU_CKPT_DIR"] == plan.spec["checkpoint"]["dir"] == "/data/ada/ckpt"


def test_user_environment_wins_over_defaults_and_is_logged():
    plan = local(env={"OMP_NUMTHREADS": "x", "OMP_NUM_THREADS": "8"})
    assert "OMP_NUM_THREADS" not in plan.env
    assert any("keeping your value 8" in n for n in plan.env_notes)


def test_a_value_the_user_exported_wins_over_the_spec_env():
    plan = local("env: {MY_FLAG: from-spec, OTHER: x}\n", env={"MY_FLAG": "from-user"})
    assert "MY_FLAG" not in plan.env and plan.env["OTHER"] == "x"
    assert any("MY_FLAG: spec env sets it, your environment's value wins" in n for n in plan.env_notes)


def test_single_node_keeps_gloo_on_loopback_and_multi_node_does_not():
    assert local().env["GLOO_SOCKET_IFNAME"] == "lo"
    two = plan_for("resources: {nodes: 2, gpus_per_node: 0}\n", backend="slurm")
    assert "GLOO_SOCKET_IFNAME" not in two.env


def test_debug_section_sets_nccl_variables():
    plan = local("debug: {nccl: info, nccl_subsys: [INIT, NET], torch_distributed: detail, flight_recorder: true}\n", visible=2)
    assert plan.env["NCCL_DEBUG"] == "INFO"
    assert plan.env["NCCL_DEBUG_SUBSYS"] == "INIT,NET"
    assert plan.env["NCCL_DEBUG_FILE"].startswith("/runs/r-1/logs/")
    assert plan.env["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL"
    assert plan.env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1"


def test_secrets_never_appear_in_the_plan_or_the_dry_run():
    plan = local("env: {WANDB_API_KEY: s3cr3t-spec, PLAIN: visible}\n", env={"HF_TOKEN": "s3cr3t-env"})
    text = describe_plan(plan)
    assert "s3cr3t" not in text and "s3cr3t" not in plan.to_json()
    assert "WANDB_API_KEY=<redacted>" in text and "PLAIN=visible" in text
    assert plan.env["WANDB_API_KEY"] == plan.spec["env"]["WANDB_API_KEY"] == REDACTED


def test_the_node_runs_the_agent_on_the_plan():
    plan = local()
    assert plan.node_argv == ("/opt/venv/bin/python", "-m", "hpcgpu", "train", "--plan", "/runs/r-1/plan.json")
    assert plan.env["HPCGPU_PLAN_FILE"] == "/runs/r-1/plan.json"
