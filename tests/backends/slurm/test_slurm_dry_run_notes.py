"""The notes under a Slurm dry run (describe_slurm): the capped grace, the partition's default time
limit, and why the job cannot run, each on its own line after the rank table."""

from __future__ import annotations

from hpcgpu.backends.slurm.planner import describe_slurm
from hpcgpu.host.spec import apply_overrides, parse_spec
from tests.helpers.plans import plan_for

ROWS = ("gpu*|4|gpu:h100:8(S:0-1)|64|512000|1:00:00|2-00:00:00", "cpu|2|(null)|32|128000|n/a|infinite")


def dry_run(partitions=(), **over) -> str:
    s = apply_overrides(parse_spec(""), {"resources.gpus_per_node": 0, **over})
    return describe_slurm(plan_for(s, backend="slurm", run_id="t-1", run_dir="/shared/runs/t-1",
                                   python="/venv/bin/python", partitions=partitions))


def notes(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("note: ")]


def test_a_capped_grace_is_explained_with_the_numbers():
    text = dry_run(**{"resources.time": "01:00:00", "slurm.signal_before_s": 60, "distributed.stop_grace_s": 120})
    [note] = notes(text)
    assert "the node agent gets 45 s to checkpoint" in note
    assert "distributed.stop_grace_s 120 s" in note and "slurm.signal_before_s 60 s - 15 s" in note


def test_no_grace_note_when_the_grace_is_not_capped():
    assert notes(dry_run(**{"resources.time": "01:00:00", "slurm.signal_before_s": 300,
                            "distributed.stop_grace_s": 60})) == []


def test_without_a_time_the_partitions_default_limit_is_shown_in_minutes():
    [note] = notes(dry_run(ROWS, **{"resources.gpus_per_node": 8}))
    assert note == "note: no resources.time: the partition's default time limit applies (60 min)"


def test_without_a_time_on_an_unlimited_partition_the_note_says_none():
    [note] = notes(dry_run(ROWS, **{"slurm.partition": "cpu"}))
    assert note.endswith("the partition's default time limit applies (none)")


def test_without_a_time_or_sinfo_the_limit_is_not_guessed():
    [note] = notes(dry_run())
    assert note.endswith("the partition's default time limit applies")


def test_a_job_that_cannot_fit_says_why_and_every_note_has_its_own_line():
    text = dry_run(ROWS, **{"resources.gpus_per_node": 16})
    assert notes(text) == [
        "note: no resources.time: the partition's default time limit applies (60 min)",
        "note: the job cannot run: asked for 16 GPUs per node, nodes of partition 'gpu' have at most 8",
    ]
    assert text.endswith("(60 min)\nnote: the job cannot run: asked for 16 GPUs per node, "
                         "nodes of partition 'gpu' have at most 8\n")
