"""Checkpoints record the spec the rank read: a secret `env:` value (a URL with a password, a name
in `secret_env:`) is `<redacted>` there, whether the rank read hpcgpu's plan or, started by plain
torchrun, a hand-written hpcgpu.yaml."""

from __future__ import annotations

import pytest
import torch

from hpcgpu.worker import api, context
from tests.helpers.plans import plan_for

PASSWORD = "ckpt-pw-0d9e7"
MARKED = "marked-value-51c3"
SPEC = (f"name: cs\nresources: {{gpus_per_node: 0, procs_per_node: 1}}\n"
        f"env: {{DATABASE_URL: 'postgres://u:{PASSWORD}@db/app', SITE_ID: {MARKED}, PLAIN: visible}}\n"
        "secret_env: [SITE_ID]\n")
RANK = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}


@pytest.fixture
def saving(monkeypatch):
    """A fresh checkpointer and context for each test (both are per-process in a rank)."""
    monkeypatch.setattr(api, "_saver", None)
    yield
    context.set_current(None)


def save_and_read(ctx):
    context.set_current(ctx)
    step = api.save_checkpoint({"w": torch.ones(2)}, 1)
    api.wait_for_checkpoint()
    return b"".join(p.read_bytes() for p in step.rglob("*") if p.is_file())


def test_a_planned_ranks_checkpoint_holds_no_secret(tmp_path, saving):
    run_dir = tmp_path / "cs-1"
    run_dir.mkdir()
    plan = plan_for(SPEC, run_id="cs-1", run_dir=str(run_dir), cwd=str(tmp_path))
    (run_dir / "plan.json").write_text(plan.to_json())
    data = save_and_read(context.from_env({**RANK, "HPCGPU_PLAN_FILE": str(run_dir / "plan.json")}))
    assert b"visible" in data and PASSWORD.encode() not in data and MARKED.encode() not in data


def test_a_torchrun_ranks_checkpoint_of_a_hand_written_spec_holds_no_secret(tmp_path, saving, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hpcgpu.yaml").write_text(SPEC)
    ctx = context.from_env({**RANK, "HPCGPU_CKPT_DIR": str(tmp_path / "ckpt")})
    assert ctx.spec.env["DATABASE_URL"] == ctx.spec.env["SITE_ID"] == "<redacted>"
    data = save_and_read(ctx)
    assert b"visible" in data and PASSWORD.encode() not in data and MARKED.encode() not in data
