"""A rank's view of its plan: the context read from HPCGPU_PLAN_FILE, the device its LOCAL_RANK was
planned, what it exports for user code, and the planned device as an error (never a CPU fallback)
when the node lacks it. CPU only: CUDA is faked where a count is needed."""

from __future__ import annotations


import pytest
import torch

from hpcgpu.contract.errors import UserError
from hpcgpu.worker import api, context
from hpcgpu.worker import dist as wdist
from tests.helpers.plans import plan_for

GPU_SPEC = "name: ctxrun\nresources: {gpus_per_node: 2}\ncheckpoint: {dir: ckpts}\n"


@pytest.fixture
def plan_file(tmp_path):
    plan = plan_for(GPU_SPEC, run_id="ctx-1", run_dir=str(tmp_path / "ctx-1"), visible_gpus=2,
                    cwd=str(tmp_path))
    (tmp_path / "ctx-1").mkdir()
    path = tmp_path / "ctx-1" / "plan.json"
    path.write_text(plan.to_json())
    return plan, path


def rank_env(path, local_rank, rank=None, **extra):
    env = {"HPCGPU_PLAN_FILE": str(path), "RANK": str(local_rank if rank is None else rank),
           "LOCAL_RANK": str(local_rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    env.update(extra)
    return env


def test_from_env_reads_the_plan(plan_file, tmp_path):
    plan, path = plan_file
    ctx = context.from_env(rank_env(path, 1, HPCGPU_CONSOLE_TTY="1"))
    assert ctx.plan == plan
    assert ctx.spec.name == "ctxrun" and ctx.spec.resources.gpus_per_node == 2
    assert ctx.run_dir == tmp_path / "ctx-1"
    assert ctx.ckpt_dir == tmp_path / "ckpts"  # checkpoint.dir, made absolute by the host
    assert (ctx.info.rank, ctx.info.local_rank, ctx.info.world_size) == (1, 1, 2)
    assert ctx.console_tty is True


def test_the_plan_beats_run_and_checkpoint_variables(plan_file, tmp_path):
    _, path = plan_file
    ctx = context.from_env(rank_env(path, 0, HPCGPU_RUN_DIR="/elsewhere", HPCGPU_CKPT_DIR="/elsewhere/c"))
    assert ctx.run_dir == tmp_path / "ctx-1" and ctx.ckpt_dir == tmp_path / "ckpts"
    assert ctx.console_tty is False


@pytest.mark.parametrize("local_rank, device", [(0, "cuda:0"), (1, "cuda:1")])
def test_planned_device_is_the_device_of_the_ranks_local_rank(plan_file, local_rank, device):
    _, path = plan_file
    # global rank 3 on the second node: the device follows the local rank
    ctx = context.from_env(rank_env(path, local_rank, rank=2 + local_rank))
    assert context.planned_device(ctx) == device


def test_a_local_rank_the_plan_lacks_is_a_user_error(plan_file):
    _, path = plan_file
    ctx = context.from_env(rank_env(path, 2))
    with pytest.raises(UserError, match="no local rank 2"):
        context.planned_device(ctx)


def test_export_sets_the_device_and_restart_count(plan_file, tmp_path):
    _, path = plan_file
    ctx = context.from_env(rank_env(path, 1))
    ctx.resume_from = tmp_path / "ckpts" / "step_10"
    env = {"HPCGPU_JOB_RESTARTS": "2", "TORCHELASTIC_RESTART_COUNT": "1", "HPCGPU_RUN_DIR": "/kept"}
    context.export(ctx, env)
    assert env["HPCGPU_DEVICE"] == "cuda:1"
    assert env["HPCGPU_RESTART_COUNT"] == "3"
    assert env["HPCGPU_RESUME_FROM"] == str(tmp_path / "ckpts" / "step_10")
    assert env["HPCGPU_RUN_DIR"] == "/kept"  # set by the agent already: left as is
    assert env["HPCGPU_CKPT_DIR"] == str(tmp_path / "ckpts")


def test_export_on_a_fresh_start(plan_file):
    _, path = plan_file
    ctx = context.from_env(rank_env(path, 0))
    env: dict = {}
    context.export(ctx, env)
    assert (env["HPCGPU_DEVICE"], env["HPCGPU_RESTART_COUNT"], env["HPCGPU_RESUME_FROM"]) == ("cuda:0", "0", "")


def test_api_device_is_the_planned_device_before_init(plan_file, monkeypatch):
    _, path = plan_file
    ctx = context.from_env(rank_env(path, 1))
    monkeypatch.setattr(context, "_current", ctx)
    assert ctx.device is None
    assert api.device() == torch.device("cuda", 1)  # the plan's, even on this CPU-only machine


def test_api_device_after_init_is_what_init_chose(plan_file, monkeypatch):
    _, path = plan_file
    ctx = context.from_env(rank_env(path, 1))
    ctx.device = torch.device("cpu")
    monkeypatch.setattr(context, "_current", ctx)
    assert api.device() == torch.device("cpu")


# ---------------------------------------------------------------- planned devices on this node


def test_planned_cpu_is_the_cpu():
    assert wdist.planned("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without usable GPUs")
def test_planned_cuda_on_a_cpu_only_machine_is_a_user_error(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(UserError) as info:
        wdist.planned("cuda:0")
    msg = info.value.message
    assert "the plan gives this rank cuda:0" in msg and "has 0 usable GPU(s)" in msg
    assert "CUDA_VISIBLE_DEVICES" not in msg
    assert "--nproc N" in info.value.hint


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without usable GPUs")
def test_the_error_names_cuda_visible_devices_when_set(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(UserError) as info:
        wdist.planned("cuda:0")
    assert info.value.message.endswith("has 0 usable GPU(s) (CUDA_VISIBLE_DEVICES=)")  # set, but empty
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(UserError, match=r"cuda:1, but this node has 0 usable GPU\(s\) \(CUDA_VISIBLE_DEVICES=3,5\)"):
        wdist.planned("cuda:1")


def test_planned_cuda_counts_the_visible_gpus(monkeypatch):
    # a node with one visible GPU: cuda:0 is there, cuda:1 is not (no CUDA call is made for this)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert wdist.planned("cuda:0") == torch.device("cuda", 0)
    assert wdist.planned("cuda") == torch.device("cuda")
    with pytest.raises(UserError, match=r"cuda:1, but this node has 1 usable GPU\(s\) \(CUDA_VISIBLE_DEVICES=7\)"):
        wdist.planned("cuda:1")
