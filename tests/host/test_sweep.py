"""Sweeps, the pure part (hpcgpu/host/sweep.py; docs/sweeps.md): what `--sweep` and `sweep:` expand
to, in which order, how tasks are named, what is refused before anything starts, and how results rank."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import parse_spec
from hpcgpu.host.sweep import MAX_TASKS, SweepTask, expand, merge_grid, parse_sweep_options, ranked, task_specs
from hpcgpu.host.sweep_launch import sweep_request


def test_sweep_options_read_each_value_as_a_yaml_scalar():
    grid = parse_sweep_options(["train.lr=0.001,0.0003", "train.seed=1,2", "train.tf32=true,false"])
    assert grid == {"train.lr": [0.001, 0.0003], "train.seed": [1, 2], "train.tf32": [True, False]}


def test_a_bracketed_value_is_one_list_of_values_so_values_may_hold_commas():
    grid = parse_sweep_options(["entry.args=[[--x, '1,2'], [--y]]"])
    assert grid == {"entry.args": [["--x", "1,2"], ["--y"]]}


@pytest.mark.parametrize("item, words", [
    ("train.lr", "expected KEY=V1,V2"),
    ("train.lr=", "expected KEY=V1,V2"),
    ("train.lr=1,,2", "has an empty value"),
    ("train.lr=[1, 2", "is not a YAML value"),
])
def test_a_malformed_sweep_option_names_itself(item, words):
    with pytest.raises(UserError, match=words):
        parse_sweep_options([item])


def test_a_key_swept_twice_is_refused():
    with pytest.raises(UserError, match="--sweep train.lr is given twice"):
        parse_sweep_options(["train.lr=1", "train.lr=2"])


def test_the_grid_is_the_product_with_the_first_key_varying_slowest():
    tasks = expand({"train.lr": [1, 2], "train.seed": [5, 6, 7]})
    assert [dict(t.overrides) for t in tasks] == [
        {"train.lr": 1, "train.seed": 5}, {"train.lr": 1, "train.seed": 6}, {"train.lr": 1, "train.seed": 7},
        {"train.lr": 2, "train.seed": 5}, {"train.lr": 2, "train.seed": 6}, {"train.lr": 2, "train.seed": 7}]
    assert [t.index for t in tasks] == [0, 1, 2, 3, 4, 5]


def test_explicit_sets_combine_with_every_grid_combination_sets_first():
    tasks = expand({"train.seed": [1, 2]}, [{"train.lr": 0.1, "train.batch_size": 8}, {"train.lr": 0.2}])
    assert [dict(t.overrides) for t in tasks] == [
        {"train.lr": 0.1, "train.batch_size": 8, "train.seed": 1}, {"train.lr": 0.1, "train.batch_size": 8, "train.seed": 2},
        {"train.lr": 0.2, "train.seed": 1}, {"train.lr": 0.2, "train.seed": 2}]


def test_sets_alone_are_one_task_each():
    assert len(expand({}, [{"train.lr": 0.1}, {"train.lr": 0.2}, {"train.lr": 0.3}])) == 3


def test_more_than_a_thousand_tasks_are_refused_before_any_is_built():
    expand({"train.seed": list(range(1000))})  # exactly the limit
    with pytest.raises(UserError, match="1001 tasks, more than 1000"):
        expand({"train.seed": list(range(1001))})
    with pytest.raises(UserError, match="2000 tasks"):
        expand({"train.seed": list(range(1000))}, [{"train.lr": 1}, {"train.lr": 2}])
    assert MAX_TASKS == 1000


@pytest.mark.parametrize("key", ["name", "logging.dir", "sweep.parallel", "sweep"])
def test_keys_that_name_the_sweeps_directories_cannot_vary(key):
    with pytest.raises(UserError, match=f"{key} cannot vary between the tasks of a sweep"):
        expand({key: ["a", "b"]})
    with pytest.raises(UserError, match=r"sweep.sets\[0\]"):
        expand({}, [{key: "a"}])


def test_an_empty_value_list_is_refused():
    with pytest.raises(UserError, match="sweep.grid.train.lr: give a non-empty list"):
        expand({"train.lr": []})


def test_an_invalid_combination_names_its_index_its_overrides_and_the_bad_key():
    base = parse_spec("train: {lr: 0.001}\n")
    tasks = expand({"train.seed": [1, 2], "train.lr": [0.1, -1.0]})
    with pytest.raises(UserError) as info:
        task_specs(base, tasks)
    text = str(info.value)
    assert text.startswith("sweep task 1 (seed=1,lr=-1.0) is invalid:"), text
    assert "train.lr: Input should be greater than 0" in text
    assert "nothing was started" in text


def test_an_unknown_key_is_named_with_its_task():
    with pytest.raises(UserError, match=r"sweep task 0 \(lrr=0.1\) is invalid:[\s\S]*train.lrr: unknown key"):
        task_specs(parse_spec(""), expand({"train.lrr": [0.1]}))


def test_labels_use_the_last_key_part_unless_two_keys_share_it():
    assert SweepTask(0, {"train.lr": 0.001, "train.seed": 1}).label() == "lr=0.001,seed=1"
    assert SweepTask(0, {"train.seed": 1, "entry.task_args.seed": 2}).label() == "train.seed=1,entry.task_args.seed=2"
    assert SweepTask(0, {"entry.args": ["--x", "1"], "train.tf32": False}).label() == "args=[--x, 1],tf32=false"


def test_task_dirs_start_with_the_index_and_hold_no_path_separators_or_percent():
    name = SweepTask(12, {"entry.script": "../a/b%j.py", "train.lr": 0.1}).dir_name()
    assert name.startswith("t12-") and "/" not in name and "%" not in name
    assert name == "t12-script=.._a_b_j.py,lr=0.1"
    assert SweepTask(3, {}).dir_name() == "t3"
    assert len(SweepTask(0, {"entry.args": ["x" * 300]}).dir_name()) <= 3 + 80


def test_spec_section_and_flags_merge_with_flags_replacing_a_key():
    assert merge_grid({"train.lr": [1, 2], "train.seed": [1]}, {"train.seed": [7, 8]}) == \
        {"train.lr": [1, 2], "train.seed": [7, 8]}
    spec = parse_spec("sweep:\n  grid: {train.lr: [0.1, 0.2]}\n  parallel: 3\n  metric: eval/loss\n  goal: max\n")
    request = sweep_request(spec, {"train.seed": [1, 2]})
    assert [dict(t.overrides) for t in request.tasks][-1] == {"train.lr": 0.2, "train.seed": 2}
    assert (request.parallel, request.metric, request.goal) == (3, "eval/loss", "max")
    assert request.base.sweep is None and all(s.sweep is None for s in request.specs)
    assert request.specs[3].train.lr == 0.2 and request.specs[3].train.seed == 2
    assert sweep_request(spec, {}, parallel=1).parallel == 1  # --parallel over sweep.parallel


def test_no_section_and_no_flags_is_one_run():
    assert sweep_request(parse_spec(""), {}) is None


def test_the_spec_section_is_validated_at_load():
    with pytest.raises(UserError, match=r"sweep.grid \(line 2\): sweep.grid.train.lr: give at least one value"):
        parse_spec("sweep:\n  grid: {train.lr: []}\n", "job.yaml")
    with pytest.raises(UserError, match="sweep.goal"):
        parse_spec("sweep: {goal: best}\n")
    with pytest.raises(UserError, match="sweep.parallel"):
        parse_spec("sweep: {parallel: -1}\n")


def test_results_rank_best_first_missing_and_nan_last_ties_by_index():
    rows = [{"index": 0, "metrics": {"final_loss": 2.0}}, {"index": 1, "metrics": {}},
            {"index": 2, "metrics": {"final_loss": 1.0}}, {"index": 3, "metrics": {"final_loss": float("nan")}},
            {"index": 4, "metrics": {"final_loss": 1.0}}]
    assert [r["index"] for r in ranked(rows, "final_loss", "min")] == [2, 4, 0, 1, 3]
    assert [r["index"] for r in ranked(rows, "final_loss", "max")] == [0, 2, 4, 1, 3]
