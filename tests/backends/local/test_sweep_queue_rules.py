"""The local sweep queue's rules (hpcgpu/backends/local/sweep_queue.py): GPU sets, how many tasks run
at once, and the sweep's exit status from its tasks'."""

from __future__ import annotations

import pytest

from hpcgpu.backends.local.sweep_queue import gpu_ids, gpu_slots, last_error, slot_count, sweep_exit_code


def test_gpu_ids_follow_cuda_visible_devices_else_count_from_zero():
    assert gpu_ids({"CUDA_VISIBLE_DEVICES": "3,5,GPU-abc"}, 3) == ["3", "5", "GPU-abc"]
    assert gpu_ids({}, 4) == ["0", "1", "2", "3"]
    assert gpu_ids({"CUDA_VISIBLE_DEVICES": "0,-1,,2"}, 4) == ["0", "2"]  # empty and -1 entries dropped


def test_gpu_sets_are_disjoint_and_leftovers_stay_idle():
    assert gpu_slots(["0", "1", "2", "3", "4"], 2) == [("0", "1"), ("2", "3")]
    assert gpu_slots(["0", "1", "2", "3"], 1) == [("0",), ("1",), ("2",), ("3",)]
    assert gpu_slots(["0"], 2) == []


@pytest.mark.parametrize("parallel, tasks, gpu_sets, cpus, ranks, expected", [
    (0, 8, 4, 64, 1, 4),    # every GPU set
    (2, 8, 4, 64, 1, 2),    # --parallel below the sets
    (6, 8, 4, 64, 1, 4),    # --parallel above the sets: the sets bound it
    (0, 2, 4, 64, 1, 2),    # never more than the tasks
    (0, 8, 0, 8, 2, 4),     # CPU: a core per rank
    (0, 8, 0, 2, 4, 1),     # CPU: at least one
    (3, 8, 0, 2, 1, 3),     # CPU: --parallel as given (oversubscribing is the user's call)
    (0, 8, 0, None, 1, 1),  # CPUs unknown
    (0, 8, 0, 5, 2, 2),     # whole tasks: 5 cores, 2 ranks a task -> 2, not 2.5
    (0, 16, 0, 8, 1, 8),    # one rank a task: a task per core
])
def test_slots(parallel, tasks, gpu_sets, cpus, ranks, expected):
    assert slot_count(parallel, tasks, gpu_sets, cpus, ranks) == expected


@pytest.mark.parametrize("codes, expected", [
    ({0: 0, 1: 0}, 0),
    ({0: 0, 1: 75}, 75),          # stopped after a checkpoint: --resume continues
    ({0: 75, 1: 130}, 75),        # interrupted before a checkpoint: resumable too
    ({0: 0, 1: 75, 2: 1}, 1),     # a failure wins
    ({0: 2}, 1),                  # a task refused at launch
    ({0: 76}, 1),                 # hung
    ({}, 0),
])
def test_the_sweeps_exit_status(codes, expected):
    assert sweep_exit_code(codes) == expected


def test_a_refused_task_quotes_its_error_line(tmp_path):
    out = tmp_path / "t0.out"
    out.write_text("hpcgpu: something\nerror: entry.script 'x.py' not found\n  hint: give the path\n")
    assert last_error(out) == "entry.script 'x.py' not found"
    out.write_text("starting\nstill going\nKilled\n")  # no error line: the last line
    assert last_error(out) == "Killed"
    out.write_bytes(b"\xff\xfe garbage\nerror: it broke\n")  # not UTF-8: still read
    assert last_error(out) == "it broke"
    out.write_text("")
    assert last_error(out) == "?"
    assert last_error(tmp_path / "missing") == "?"
