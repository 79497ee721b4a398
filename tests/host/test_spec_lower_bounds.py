"""The lower end of every numeric range of the spec, as literal numbers from docs/spec.md ("integer,
1 to 65536", ...): the smallest value is accepted and the next one down is refused, naming the key,
its line and the minimum. Literals on purpose: a test that read the minimum from the spec's own
schema would move with a wrong minimum (tests/host/test_spec_bounds.py does the same for the upper end)."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import parse_spec

#: (key, the smallest value accepted, the largest refused, what the message says), from docs/spec.md
LOWER_BOUNDS = [
    ("resources.nodes", 1, 0, "Input should be greater than or equal to 1"),
    ("resources.gpus_per_node", 0, -1, "must be >= 0 or 'all'"),
    ("resources.procs_per_node", 1, 0, "Input should be greater than or equal to 1"),
    ("resources.cpus_per_task", 1, 0, "Input should be greater than or equal to 1"),
    ("distributed.timeout_s", 1, 0, "Input should be greater than or equal to 1"),
    ("distributed.rdzv_timeout_s", 1, 0, "Input should be greater than or equal to 1"),
    ("distributed.max_restarts", 0, -1, "Input should be greater than or equal to 0"),
    ("distributed.stop_grace_s", 1, 0, "Input should be greater than or equal to 1"),
    ("distributed.stop_check_every", 1, 0, "Input should be greater than or equal to 1"),
    ("train.batch_size", 1, 0, "Input should be greater than or equal to 1"),
    ("train.grad_accum", 1, 0, "Input should be greater than or equal to 1"),
    ("train.epochs", 1, 0, "Input should be greater than or equal to 1"),
    ("train.max_steps", 1, 0, "Input should be greater than or equal to 1"),
    ("train.seed", -4294967295, -4294967296, "Input should be greater than or equal to -4294967295"),
    ("train.num_workers", 0, -1, "Input should be greater than or equal to 0"),
    ("train.log_every", 1, 0, "Input should be greater than or equal to 1"),
    ("train.eval_every_steps", 0, -1, "Input should be greater than or equal to 0"),
    ("train.eval_batch_size", 1, 0, "Input should be greater than or equal to 1"),
    ("checkpoint.every_steps", 1, 0, "Input should be greater than or equal to 1"),
    ("checkpoint.keep_last", 2, 1, "keep_last must be >= 2"),
    ("slurm.signal_before_s", 10, 9, "Input should be greater than or equal to 10"),
    ("slurm.max_timeout_requeues", 0, -1, "Input should be greater than or equal to 0"),
]


@pytest.mark.parametrize("key, lowest, refused, message", LOWER_BOUNDS, ids=[k for k, *_ in LOWER_BOUNDS])
def test_each_number_has_the_documented_minimum(key, lowest, refused, message):
    section, leaf = key.split(".")
    spec = parse_spec(f"{section}:\n  {leaf}: {lowest}\n")
    assert getattr(getattr(spec, section), leaf) == lowest
    with pytest.raises(UserError) as info:
        parse_spec(f"{section}:\n  {leaf}: {refused}\n", "job.yaml")
    assert any(ln.startswith(f"  {key} (line 2): {message}") for ln in str(info.value).splitlines()), str(info.value)


def test_the_learning_rate_must_be_above_zero():
    # docs/spec.md: "number, > 0 and <= 10000"
    assert parse_spec("train:\n  lr: 1.0e-12\n").train.lr == 1e-12
    with pytest.raises(UserError) as info:
        parse_spec("train:\n  lr: 0\n", "job.yaml")
    assert "  train.lr (line 2): Input should be greater than 0" in str(info.value).splitlines()
