"""Spec loading is bounded: no YAML can make hpcgpu exhaust memory or time, and bytes that are not
text are a clear error (exit 2 through the CLI), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import MAX_SPEC_BYTES, MAX_SPEC_NODES, Spec, load_spec, parse_spec

#: "billion laughs": 342 bytes that expand to 10^9 list items through nested aliases
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))


def test_billion_laughs_is_refused_at_the_first_anchor():
    with pytest.raises(UserError, match="anchors and aliases") as info:
        parse_spec(LAUGHS)
    assert "line 1" in str(info.value) and "write the value out" in info.value.hint


def test_an_alias_inside_task_args_is_refused_too():
    text = "entry:\n  task: hpcgpu.examples.mlp:make_task\n  task_args: {n_samples: 512}\nname: &n x\nlogging: {dir: *n}\n"
    with pytest.raises(UserError, match="anchors and aliases"):
        parse_spec(text)


def test_too_many_values_are_refused():
    keys = "".join(f"  k{i}: 1\n" for i in range(MAX_SPEC_NODES))
    assert len(keys) < MAX_SPEC_BYTES  # small enough in bytes: the value count is what refuses it
    with pytest.raises(UserError, match=f"more than {MAX_SPEC_NODES} values"):
        parse_spec("entry:\n  task: m:f\n  task_args:\n" + keys)


def test_a_file_over_the_size_bound_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_SPEC_BYTES + "\n")
    with pytest.raises(UserError, match=r"is \d+ bytes: a spec may have at most 1048576"):
        load_spec(big)


def test_non_utf8_bytes_name_the_byte_and_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: ok\nenv: {CITY: 'K\xf6ln'}\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"not UTF-8 text: byte 23 \(line 2\) is 0xf6"):
        load_spec(bad)


def test_the_cli_says_so_with_exit_2_and_creates_nothing(tmp_path):
    (tmp_path / "laughs.yaml").write_text(LAUGHS)
    env = {**os.environ, "HPCGPU_HOME": str(tmp_path / "home")}
    for args in (["spec", "validate", "-f", "laughs.yaml"], ["run", "local", "-f", "laughs.yaml", "--dry-run"]):
        out = subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and "anchors and aliases" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()


# ---------------------------------------------------------------- numeric ranges
# Every number of the spec reaches a C-level call (timedelta, a torch generator, sbatch --signal):
# unbounded, `timeout_s: 1e20` loads and the ranks crash later with OverflowError. The bounds are
# literal numbers here on purpose: a test that read them from the schema would move with a wrong bound.

#: (key, the largest value accepted, the smallest refused)
UPPER_BOUNDS = [
    ("resources.nodes", 65536, 65537),
    ("resources.gpus_per_node", 64, 65),
    ("resources.procs_per_node", 4096, 4097),
    ("resources.cpus_per_task", 4096, 4097),
    ("distributed.timeout_s", 604800, 604801),
    ("distributed.rdzv_timeout_s", 604800, 604801),
    ("distributed.stop_grace_s", 604800, 604801),
    ("distributed.stop_check_every", 1_000_000_000, 1_000_000_001),
    ("distributed.max_restarts", 1000, 1001),
    ("train.batch_size", 1_048_576, 1_048_577),
    ("train.grad_accum", 65536, 65537),
    ("train.lr", 10000.0, 10000.5),
    ("train.epochs", 1_000_000_000, 1_000_000_001),
    ("train.max_steps", 1_000_000_000, 1_000_000_001),
    ("train.seed", 4_294_967_295, 4_294_967_296),
    ("train.num_workers", 256, 257),
    ("train.log_every", 1_000_000_000, 1_000_000_001),
    ("train.eval_every_steps", 1_000_000_000, 1_000_000_001),
    ("train.eval_batch_size", 1_048_576, 1_048_577),
    ("checkpoint.every_steps", 1_000_000_000, 1_000_000_001),
    ("checkpoint.keep_last", 1_000_000_000, 1_000_000_001),
    ("slurm.signal_before_s", 65535, 65536),
    ("slurm.max_timeout_requeues", 1000, 1001),
    ("watchdog.stall_s", 604800, 604801),
    ("watchdog.requeues", 1000, 1001),
    ("sweep.parallel", 1000, 1001),
]


def _yaml_with(key: str, value) -> str:
    section, leaf = key.split(".")
    return f"{section}:\n  {leaf}: {value}\n"


@pytest.mark.parametrize("key, highest, refused", UPPER_BOUNDS, ids=[k for k, _, _ in UPPER_BOUNDS])
def test_each_number_has_an_upper_bound_that_names_the_key(key, highest, refused):
    section, leaf = key.split(".")
    assert getattr(getattr(parse_spec(_yaml_with(key, highest)), section), leaf) == highest
    with pytest.raises(UserError) as info:
        parse_spec(_yaml_with(key, refused), "job.yaml")
    line = next(ln for ln in str(info.value).splitlines() if ln.strip().startswith(key))
    bound = str(int(highest))  # 10000.0 reads 10000 in the message
    assert line.strip() in (f"{key} (line 2): Input should be less than or equal to {bound}",
                            f"{key} (line 2): must be <= {bound} (GPUs in one node) or 'all'"), line


def test_the_seed_may_be_negative_down_to_minus_2_32():
    assert parse_spec("train: {seed: -4294967295}\n").train.seed == -4294967295
    with pytest.raises(UserError, match=r"train.seed \(line 1\): Input should be greater than or equal to -4294967295"):
        parse_spec("train: {seed: -4294967296}\n")


# YAML 1.1 reads `1e23` as a string (refused as "not a valid integer"); `1.0e+23` is the float the
# loader took before, and a plain integer of 21 digits likewise
@pytest.mark.parametrize("text, key, bound", [
    ("train:\n  seed: 1.0e+23\n", "train.seed", "4294967295"),
    # within 64 bits, so it loaded; the loader's generator (seed * 1000003) overflowed in the ranks
    ("train:\n  seed: 1000000000000000000\n", "train.seed", "4294967295"),
    ("distributed:\n  timeout_s: 1.0e+20\n", "distributed.timeout_s", "604800"),
    ("distributed:\n  rdzv_timeout_s: 100000000000000000000\n", "distributed.rdzv_timeout_s", "604800"),
], ids=["seed-1e23", "seed-1e18", "timeout-1e20", "rdzv-timeout-1e20"])
def test_the_numbers_that_overflowed_in_the_ranks_are_refused_at_load(text, key, bound):
    with pytest.raises(UserError, match=rf"{key} \(line 2\): Input should be less than or equal to {bound}"):
        parse_spec(text, "job.yaml")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_lr_must_be_finite(value):
    with pytest.raises(UserError, match=r"train.lr \(line 1\): Input should be a finite number"):
        parse_spec(f"train: {{lr: {value}}}\n")


def test_every_number_of_the_spec_is_in_the_bounds_table():
    """A numeric key added to the spec needs a bound here too (this reads which keys are numbers
    from the schema, never the bounds)."""
    root = Spec.model_json_schema()
    numeric = set()
    for section, ref in root["properties"].items():
        model = root["$defs"].get(next((r["$ref"] for r in [ref, *ref.get("anyOf", [])] if "$ref" in r), "#/-")
                                  .rsplit("/", 1)[1], {})
        for leaf, schema in model.get("properties", {}).items():
            if any(b.get("type") in ("integer", "number") for b in schema.get("anyOf", [schema])):
                numeric.add(f"{section}.{leaf}")
    assert all(p.get("type") not in ("integer", "number") for p in root["properties"].values())  # none at top level
    assert numeric == {key for key, _, _ in UPPER_BOUNDS}


def test_the_cli_refuses_an_overflowing_seed_with_exit_2_and_creates_nothing(tmp_path):
    (tmp_path / "job.yaml").write_text("train:\n  seed: 1.0e+23\n")
    env = {**os.environ, "HPCGPU_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "hpcgpu", "run", "local", "-f", "job.yaml", "--nproc", "1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "train.seed (line 2): Input should be less than or equal to 4294967295" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()
