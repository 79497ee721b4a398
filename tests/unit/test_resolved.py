"""Ranks read the resolved spec without pydantic: the view must answer like the model does."""

import subprocess
import sys

from hpcgpu.contract.specview import SpecView, load_resolved
from hpcgpu.host.spec import dump_spec, parse_spec

TEXT = """
name: v
entry: {script: train.py, args: [--x, "1"]}
resources: {nodes: 2, gpus_per_node: 4}
train: {lr: 0.0003, strategy: fsdp, precision: bf16}
checkpoint: {dir: /ckpt, every_steps: 7}
env: {A: b}
slurm: {extra: {exclusive: true}}
"""


def test_view_matches_the_model(tmp_path):
    spec = parse_spec(TEXT)
    (tmp_path / "spec.yaml").write_text(dump_spec(spec))
    view = load_resolved(tmp_path / "spec.yaml")
    assert view.model_dump() == spec.model_dump(mode="json")
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
        view = SpecView(parse_spec(dump_spec(parse_spec(f"entry: {entry}"))).model_dump(mode="json"))
        assert view.entry.kind == kind


def test_the_worker_context_does_not_import_pydantic(tmp_path):
    (tmp_path / "spec.yaml").write_text(dump_spec(parse_spec(TEXT)))
    code = ("import sys, os; from hpcgpu.worker import context; "
            f"os.environ['HPCGPU_SPEC_FILE'] = {str(tmp_path / 'spec.yaml')!r}; "
            "ctx = context.from_env(os.environ); print(ctx.spec.train.lr, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.0003", "False"]


def test_a_hand_written_spec_file_is_validated_and_completed(tmp_path):
    (tmp_path / "mine.yaml").write_text("train: {lr: 0.5}\n")
    view = load_resolved(tmp_path / "mine.yaml")
    assert view.train.lr == 0.5 and view.entry.kind == "task" and view.checkpoint.keep_last == 3


def test_the_header_marks_resolved_specs():
    from hpcgpu.contract import specview as resolved
    from hpcgpu.host import spec

    assert resolved.RESOLVED_HEADER == spec.RESOLVED_HEADER
    assert dump_spec(parse_spec("")).startswith(spec.RESOLVED_HEADER)
