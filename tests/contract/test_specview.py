"""Agents and ranks read the resolved spec without pydantic: the view must answer like the model does."""

import subprocess
import sys

from hpcgpu.contract.specview import RESOLVED_HEADER, SpecView
from hpcgpu.host.spec import dump_spec, parse_spec, resolved_data
from tests.helpers.plans import plan_for

TEXT = """
name: v
entry: {script: train.py, args: [--x, "1"]}
resources: {nodes: 2, gpus_per_node: 4}
train: {lr: 0.0003, strategy: fsdp, precision: bf16}
checkpoint: {dir: /ckpt, every_steps: 7}
env: {A: b}
slurm: {extra: {exclusive: true}}
"""


def test_view_matches_the_model():
    spec = parse_spec(TEXT)
    view = SpecView(resolved_data(spec))
    # a resolved spec is one run's: a sweep section (None here) is never recorded
    assert view.model_dump() == {k: v for k, v in spec.model_dump(mode="json").items() if k != "sweep"}
    assert view.train.model_dump() == spec.train.model_dump(mode="json")
    for path in ("name", "entry.script", "entry.args", "entry.kind", "resources.gpus_per_node", "train.lr",
                 "train.strategy", "checkpoint.dir", "checkpoint.every_steps", "distributed.timeout_s",
                 "logging.progress", "debug.nccl", "container"):
        got, want = view, spec
        for part in path.split("."):
            got, want = getattr(got, part), getattr(want, part)
        assert got == want, path
    assert view.env == {"A": "b"} and view.slurm.extra == {"exclusive": True}


def test_entry_kind_for_each_entry():
    for entry, kind in (({"task": "m:f"}, "task"), ({"module": "m"}, "module"), ({"script": "s.py"}, "script")):
        spec = parse_spec(f"entry: {entry}")
        assert SpecView(resolved_data(spec)).entry.kind == spec.entry.kind == kind


def test_the_worker_context_reads_the_plan_without_pydantic_or_the_host_layer(tmp_path):
    plan = plan_for("train: {lr: 0.0003}\n", run_dir=str(tmp_path), visible_gpus=0)
    (tmp_path / "plan.json").write_text(plan.to_json())
    code = ("import sys, os; from hpcgpu.worker import context; "
            f"os.environ['HPCGPU_PLAN_FILE'] = {str(tmp_path / 'plan.json')!r}; "
            "ctx = context.from_env(os.environ); "
            "print(ctx.spec.train.lr, context.planned_device(ctx), 'pydantic' in sys.modules, "
            "any(m.startswith('hpcgpu.host') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.0003", "cpu", "False", "False"]


def test_a_rank_without_a_plan_validates_a_hand_written_spec(tmp_path):
    (tmp_path / "mine.yaml").write_text("train: {lr: 0.5}\n")
    from hpcgpu.worker.context import spec_without_plan

    view = spec_without_plan({"HPCGPU_SPEC_FILE": str(tmp_path / "mine.yaml")})
    assert view.train.lr == 0.5 and view.entry.kind == "task" and view.checkpoint.keep_last == 3
    (tmp_path / "resolved.yaml").write_text(dump_spec(parse_spec("train: {lr: 0.25}\n")))
    assert spec_without_plan({"HPCGPU_SPEC_FILE": str(tmp_path / "resolved.yaml")}).train.lr == 0.25


def test_the_header_marks_resolved_specs():
    assert dump_spec(parse_spec("")).startswith(RESOLVED_HEADER)
