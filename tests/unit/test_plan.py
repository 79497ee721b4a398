"""build_plan is pure: layouts, rank tables, GPU requests that cannot be met, redaction."""

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.plan import build_plan, describe_plan, node_layout, rank_table
from hpcgpu.host.spec import apply_overrides, parse_spec


def plan_for(text="", visible=0, env=None, **over):
    spec = apply_overrides(parse_spec(text), over)
    return build_plan(spec, backend="local", run_id="r-1", run_dir="/runs/r-1", visible_gpus=visible,
                      user_env=env or {}, python="python3")


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


def test_more_gpus_than_visible_suggests_nproc():
    with pytest.raises(UserError) as info:
        plan_for(visible=0, **{"resources.gpus_per_node": 4})
    assert "asked for 4 GPU(s)" in str(info.value) and "--nproc" in str(info.value)


def test_all_gpus_on_unknown_nodes_needs_a_count():
    spec = parse_spec("")
    with pytest.raises(UserError, match="gpus-per-node"):
        node_layout(spec, None)


def test_fp16_on_cpu_is_refused():
    with pytest.raises(UserError, match="train.precision is fp16"):
        plan_for("train: {precision: fp16}\n", visible=0)


def test_rank_table_two_nodes():
    spec = apply_overrides(parse_spec(""), {"resources.gpus_per_node": 2, "resources.nodes": 2})
    rows = rank_table(2, node_layout(spec, 2))
    assert [(r.rank, r.node, r.local_rank, r.device) for r in rows] == [
        (0, 0, 0, "cuda:0"), (1, 0, 1, "cuda:1"), (2, 1, 0, "cuda:0"), (3, 1, 1, "cuda:1")]


def test_plan_pins_the_resolved_layout():
    plan = plan_for(visible=3)
    assert plan.spec.resources.gpus_per_node == 3 and plan.world_size == 3


def test_user_environment_wins_over_defaults_and_is_logged():
    plan = plan_for(env={"OMP_NUMTHREADS": "x", "OMP_NUM_THREADS": "8"})
    assert "OMP_NUM_THREADS" not in plan.env
    assert any("keeping your value 8" in n for n in plan.env_notes)


def test_debug_section_sets_nccl_variables():
    plan = plan_for("debug: {nccl: info, nccl_subsys: [INIT, NET], torch_distributed: detail, flight_recorder: true}\n")
    assert plan.env["NCCL_DEBUG"] == "INFO"
    assert plan.env["NCCL_DEBUG_SUBSYS"] == "INIT,NET"
    assert plan.env["NCCL_DEBUG_FILE"].startswith("/runs/r-1/logs/")
    assert plan.env["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL"
    assert plan.env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1"


def test_secrets_never_appear_in_the_dry_run():
    plan = plan_for("env: {WANDB_API_KEY: s3cr3t-spec, PLAIN: visible}\n", env={"HF_TOKEN": "s3cr3t-env"})
    text = describe_plan(plan)
    assert "s3cr3t" not in text
    assert "WANDB_API_KEY=<redacted>" in text and "PLAIN=visible" in text
