"""host.plan's own rules, called directly: ranks per node and their device, the process-group
backend, the checkpoint directory, the defaults every rank gets (gloo pinned to loopback only on a
single node), the variables pointing ranks at the run, and the requests that are refused."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.plan import (
    NodeLayout,
    agent_command,
    checkpoint_dir,
    core_plan,
    entry_text,
    node_layout,
    pin_layout,
    process_group_backend,
    rank_defaults,
    rank_env,
)
from hpcgpu.host.spec import apply_overrides, parse_spec
from tests.helpers.plans import facts

RUN = "/runs/r-1"


def spec(text="", **over):
    return apply_overrides(parse_spec(text), over)


def layout(gpus, procs=2, strategy="ddp", visible=8):
    got = node_layout(spec(**{"resources.gpus_per_node": gpus, "resources.procs_per_node": procs,
                              "train.strategy": strategy}), visible)
    return (got.nproc, got.device, got.gpus)


# --- node_layout ---------------------------------------------------------------------------------

def test_zero_gpus_means_procs_per_node_cpu_ranks():
    assert layout(0, procs=3) == (3, "cpu", 0)


def test_dp_on_cpu_is_one_process():
    assert layout(0, procs=4, strategy="dp") == (1, "cpu", 0)


def test_one_gpu_is_one_cuda_rank_not_cpu():
    assert layout(1, visible=1) == (1, "cuda", 1)


def test_gpu_ranks_are_one_per_gpu_whatever_procs_per_node_says():
    assert layout(3, procs=7, visible=4) == (3, "cuda", 3)


def test_dp_uses_every_gpu_in_one_process():
    assert layout(4, strategy="dp", visible=4) == (1, "cuda", 4)


def test_all_gpus_takes_what_the_node_sees():
    assert layout("all", visible=6) == (6, "cuda", 6)


def test_asking_for_exactly_the_visible_gpus_is_fine():
    assert layout(2, visible=2) == (2, "cuda", 2)


def test_unknown_visible_gpus_trusts_an_explicit_count():
    # a remote (Slurm) node: hpcgpu cannot see its GPUs, the count the user gave is taken
    got = node_layout(spec(**{"resources.gpus_per_node": 8}), None)
    assert (got.nproc, got.device, got.gpus) == (8, "cuda", 8)


def test_all_gpus_on_nodes_that_cannot_be_seen_asks_for_a_count():
    with pytest.raises(UserError) as info:
        node_layout(spec(**{"resources.gpus_per_node": "all"}), None)
    assert info.value.message.startswith("resources.gpus_per_node is 'all'")
    assert info.value.message.endswith("the GPUs of the compute nodes are not known here")
    assert info.value.hint.startswith("give a count: --gpus-per-node 8")
    assert info.value.hint.endswith("(or 0 for CPU ranks)")


def test_more_gpus_than_the_machine_has_names_both_counts_and_the_way_out():
    with pytest.raises(UserError) as info:
        node_layout(spec(**{"resources.gpus_per_node": 3}), 2)
    assert info.value.message.startswith("asked for 3 GPU(s) per node") and info.value.message.endswith("has 2")
    assert info.value.hint.startswith("use --nproc N to run N CPU ranks") and info.value.hint.endswith("--gpus all")


# --- process_group_backend -----------------------------------------------------------------------

@pytest.mark.parametrize("requested, device, expected", [
    ("auto", "cuda", "nccl"), ("auto", "cpu", "gloo"),
    ("gloo", "cuda", "gloo"), ("gloo", "cpu", "gloo"), ("nccl", "cuda", "nccl"),
])
def test_auto_is_resolved_and_an_explicit_backend_is_kept(requested, device, expected):
    assert process_group_backend(requested, device) == expected


def test_nccl_on_cpu_ranks_is_refused_with_the_fix():
    with pytest.raises(UserError) as info:
        process_group_backend("nccl", "cpu")
    assert info.value.message.startswith("distributed.backend is nccl, but the ranks run on CPUs")
    assert info.value.message.endswith("(nccl needs GPUs)")
    assert info.value.hint.startswith("use distributed.backend: auto (gloo on CPUs)")
    assert info.value.hint.endswith("request GPUs")


# --- checkpoint_dir / pin_layout -----------------------------------------------------------------

def test_checkpoint_dir_defaults_to_the_run_dirs_checkpoints():
    assert checkpoint_dir(spec(), "/home/ada/proj", RUN) == "/runs/r-1/checkpoints"


def test_a_relative_checkpoint_dir_is_relative_to_where_hpcgpu_started():
    s = spec("checkpoint: {dir: ckpts/../ck}\n")
    assert checkpoint_dir(s, "/home/ada/proj", RUN) == "/home/ada/proj/ck"


def test_an_absolute_checkpoint_dir_is_kept():
    s = spec("checkpoint: {dir: /scratch/ada/ck/}\n")
    assert checkpoint_dir(s, "/home/ada/proj", RUN) == "/scratch/ada/ck"


def test_pin_layout_writes_cpu_ranks_and_the_checkpoint_dir_into_the_spec():
    pinned = pin_layout(spec(), NodeLayout(nproc=3, device="cpu", gpus=0), "/abs/ck")
    assert pinned.resources.gpus_per_node == 0 and pinned.resources.procs_per_node == 3
    assert pinned.checkpoint.dir == "/abs/ck"


def test_pin_layout_keeps_procs_per_node_for_gpu_ranks():
    s = spec(**{"resources.procs_per_node": 5})
    pinned = pin_layout(s, NodeLayout(nproc=1, device="cuda", gpus=4), "/abs/ck")
    assert pinned.resources.gpus_per_node == 4 and pinned.resources.procs_per_node == 5


# --- rank_defaults / rank_env --------------------------------------------------------------------

def defaults_of(text=""):
    return {d.name: d for d in rank_defaults(spec(text), RUN)}


def test_a_single_node_pins_gloo_to_loopback_with_its_reason_and_link():
    d = defaults_of("resources: {nodes: 1}\n")["GLOO_SOCKET_IFNAME"]
    assert d.value == "lo"
    assert d.why.startswith("single node") and d.why.endswith("loopback")
    assert d.link == "https://docs.pytorch.org/docs/stable/distributed.html#common-environment-variables"


@pytest.mark.parametrize("nodes", [2, 3, 16])
def test_a_multi_node_plan_never_pins_gloo_to_loopback(nodes):
    # ranks on other nodes must reach each other: loopback would make gloo unreachable across nodes
    names = defaults_of(f"resources: {{nodes: {nodes}, gpus_per_node: 0}}\n")
    assert "GLOO_SOCKET_IFNAME" not in names
    assert "OMP_NUM_THREADS" in names  # the other defaults stay


def test_rank_defaults_include_the_debug_sections_variables_for_this_run_dir():
    names = defaults_of("debug: {nccl: warn}\n")
    assert names["NCCL_DEBUG"].value == "WARN"
    assert names["NCCL_DEBUG_FILE"].value == "/runs/r-1/logs/nccl.%h.%p.log"


def test_rank_env_points_every_rank_at_the_run():
    merged = rank_env(spec(), RUN, "/scratch/ck", {})
    assert merged.added["HPCGPU_RUN_DIR"] == "/runs/r-1"
    assert merged.added["HPCGPU_PLAN_FILE"] == "/runs/r-1/plan.json"
    assert merged.added["HPCGPU_SPEC_FILE"] == "/runs/r-1/spec.yaml"
    assert merged.added["HPCGPU_CKPT_DIR"] == "/scratch/ck"
    assert merged.added["GLOO_SOCKET_IFNAME"] == "lo" and merged.added["OMP_NUM_THREADS"] == "1"


def test_rank_env_spec_env_is_added_and_the_users_value_wins_over_defaults():
    merged = rank_env(spec("env: {FOO: bar}\n"), RUN, "/ck", {"GLOO_SOCKET_IFNAME": "eth1"})
    assert merged.added["FOO"] == "bar"
    assert "GLOO_SOCKET_IFNAME" not in merged.added  # the node's own value reaches the ranks untouched
    assert any(n.startswith("GLOO_SOCKET_IFNAME: keeping your value eth1") for n in merged.notes)


def test_rank_env_notes_redact_secret_env_values_the_user_exported():
    merged = rank_env(spec("secret_env: [MY_PASS]\nenv: {MY_PASS: x}\n"), RUN, "/ck", {"MY_PASS": "hunter2"})
    assert not any("hunter2" in n for n in merged.notes)


def test_rank_env_notes_redact_a_marked_secret_even_for_a_variable_hpcgpu_defaults():
    # secret_env marks a name secret wherever its value is shown, the notes about defaults included
    marked = spec("secret_env: [OMP_NUM_THREADS]\n")
    users = rank_env(marked, RUN, "/ck", {"OMP_NUM_THREADS": "hunter2"})
    assert [n for n in users.notes if n.startswith("OMP_NUM_THREADS")]
    assert not any("hunter2" in n for n in users.notes)
    specs = rank_env(spec("secret_env: [OMP_NUM_THREADS]\nenv: {OMP_NUM_THREADS: hunter3}\n"), RUN, "/ck", {})
    assert [n for n in specs.notes if n.startswith("OMP_NUM_THREADS")]
    assert not any("hunter3" in n for n in specs.notes)


def test_the_node_command_is_the_agent_on_the_runs_plan():
    assert agent_command("/venv/bin/python", RUN) == (
        "/venv/bin/python", "-m", "hpcgpu", "train", "--plan", "/runs/r-1/plan.json")


# --- core_plan -----------------------------------------------------------------------------------

def core(text="", visible=0, run_dir=RUN, **facts_over):
    return core_plan(spec(text), facts(**facts_over), backend="local", run_id="r-1", run_dir=run_dir,
                     visible_gpus=visible)


def test_core_plan_refuses_a_relative_run_dir():
    with pytest.raises(ValueError, match="run_dir must be absolute.*'runs/r-1'"):
        core(run_dir="runs/r-1")


def test_core_plan_without_created_is_time_zero():
    assert core().created == 0.0


def test_core_plan_records_when_it_was_created():
    plan = core_plan(spec(), facts(), backend="local", run_id="r-1", run_dir=RUN, visible_gpus=0,
                     created=1767225600.5)
    assert plan.created == 1767225600.5


def test_core_plan_fills_every_shared_part():
    plan = core("resources: {gpus_per_node: 0, procs_per_node: 3}\n", python="/venv/bin/python")
    assert (plan.run_id, plan.run_dir, plan.backend) == ("r-1", RUN, "local")
    assert plan.ckpt_dir == "/runs/r-1/checkpoints"
    assert (plan.nodes, plan.nproc_per_node, plan.device_type, plan.gpus_per_node) == (1, 3, "cpu", 0)
    assert plan.process_group_backend == "gloo" and plan.precision == "fp32"
    assert [(r.rank, r.device, r.backend) for r in plan.ranks] == [(0, "cpu", "gloo"), (1, "cpu", "gloo"), (2, "cpu", "gloo")]
    assert plan.node_argv == ("/venv/bin/python", "-m", "hpcgpu", "train", "--plan", "/runs/r-1/plan.json")
    assert plan.container_prefix == () and plan.request == {}
    assert plan.spec["resources"]["procs_per_node"] == 3 and plan.spec["checkpoint"]["dir"] == "/runs/r-1/checkpoints"
    assert plan.env["HPCGPU_CKPT_DIR"] == "/runs/r-1/checkpoints"
    assert isinstance(plan.env_notes, tuple) and plan.env_notes[0].startswith("OMP_NUM_THREADS=1 (")


def test_core_plan_uses_the_checkpoint_dir_relative_to_the_hosts_cwd():
    plan = core("checkpoint: {dir: ck}\n", cwd="/home/bob/exp")
    assert plan.ckpt_dir == "/home/bob/exp/ck" == plan.env["HPCGPU_CKPT_DIR"]


def test_core_plan_explicit_gloo_on_gpus_is_planned_per_rank():
    plan = core("distributed: {backend: gloo}\n", visible=2)
    assert plan.process_group_backend == "gloo"
    assert [(r.device, r.backend) for r in plan.ranks] == [("cuda:0", "gloo"), ("cuda:1", "gloo")]


def test_core_plan_users_environment_wins_and_secrets_are_redacted():
    plan = core("env: {HF_TOKEN: from-spec, PLAIN: p}\n", environ={"OMP_NUM_THREADS": "4"})
    assert "OMP_NUM_THREADS" not in plan.env and plan.env["PLAIN"] == "p"
    assert plan.env["HF_TOKEN"] == "<redacted>"


def test_core_plan_marked_secret_env_is_redacted():
    plan = core("secret_env: [MY_PASS]\nenv: {MY_PASS: hunter2}\n")
    assert plan.env["MY_PASS"] == "<redacted>" and "hunter2" not in plan.to_json()


def test_multi_node_core_plan_lays_ranks_over_the_nodes_without_loopback_gloo():
    plan = core_plan(spec("resources: {nodes: 2, gpus_per_node: 0, procs_per_node: 2}\n"), facts(),
                     backend="slurm", run_id="r-1", run_dir=RUN, visible_gpus=None)
    assert plan.nodes == 2 and plan.world_size == 4
    assert [r.node for r in plan.ranks] == [0, 0, 1, 1]
    assert "GLOO_SOCKET_IFNAME" not in plan.env


def test_fp16_task_on_cpu_ranks_is_refused_with_the_fix():
    with pytest.raises(UserError) as info:
        core("train: {precision: fp16}\n")
    assert info.value.message.startswith("train.precision is fp16, but the ranks run on CPUs")
    assert info.value.hint.startswith("use precision: bf16 (autocast on CPUs) or fp32 on CPU")
    assert info.value.hint.endswith("request GPUs")


def test_bf16_task_on_cpu_ranks_is_planned():
    # torch.autocast("cpu", torch.bfloat16) works; the Trainer prints a note on its speed
    assert core("train: {precision: bf16}\n").precision == "bf16"


def test_half_precision_task_on_gpus_is_planned():
    assert core("train: {precision: bf16}\n", visible=1).precision == "bf16"


def test_half_precision_is_not_checked_for_a_users_own_script_on_cpu():
    # train.precision is the built-in Trainer's setting; a script does its own thing
    plan = core("entry: {script: train.py}\ntrain: {precision: bf16}\n")
    assert plan.device_type == "cpu" and plan.precision == "bf16"


# --- entry_text ----------------------------------------------------------------------------------

def test_entry_text_names_the_kind_and_quotes_the_arguments():
    assert entry_text({"entry": {"script": "train.py", "module": None, "task": None,
                                 "args": ["--name", "my run"]}}) == "script train.py --name 'my run'"
    assert entry_text({"entry": {"script": None, "module": "pkg.train", "task": None,
                                 "args": ["-v"]}}) == "module pkg.train -v"
    assert entry_text({"entry": {"script": None, "module": None, "task": "pkg.m:make",
                                 "args": []}}) == "task pkg.m:make"
