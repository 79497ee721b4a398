"""`hpcgpu logs RUN --all / --dedup`: the real CLI on run directories written by hand (a real run's are
checked in tests/cli/test_console_modes.py)."""

from __future__ import annotations

from hpcgpu.contract.ranklines import index_record
from tests.cli.test_logs_follow import finish, hpcgpu, make_run


def write_rank(run_dir, rank: int, writes) -> None:
    """rank<N>.log and .idx as the node agent writes them: [(time, text), ...], one write each."""
    data, index = b"", b""
    for t, text in writes:
        data += text.encode()
        index += index_record(len(data), t, "o")
    (run_dir / "logs" / f"rank{rank}.log").write_bytes(data)
    (run_dir / "logs" / f"rank{rank}.idx").write_bytes(index)


def test_all_merges_ranks_by_read_time_and_dedup_groups_identical_lines(tmp_path):
    run_dir = make_run(tmp_path, "many")
    for rank in range(4):
        write_rank(run_dir, rank, [(100.0 + rank, "loading data\n"), (110.0 - rank, f"rank {rank} ready\n")])
    proc = hpcgpu(tmp_path, "logs", "many", "--all")
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"[rank {r}] loading data" for r in range(4)] + [
        f"[rank {r}] rank {r} ready" for r in (3, 2, 1, 0)]
    proc = hpcgpu(tmp_path, "logs", "many", "--dedup")
    out, err = finish(proc)
    assert out.splitlines() == ["[ranks 0-3] loading data"] + [f"[rank {r}] rank {r} ready" for r in (3, 2, 1, 0)]


def test_all_reads_run_dirs_without_an_index_rank_by_rank(tmp_path):
    run_dir = make_run(tmp_path, "old")  # as written before the index existed, or by plain torchrun
    (run_dir / "logs" / "rank0.log").write_text("a\nb\n")
    (run_dir / "logs" / "rank1.log").write_text("c\n")
    proc = hpcgpu(tmp_path, "logs", "old", "--all")
    out, err = finish(proc)
    assert proc.returncode == 0 and out == "[rank 0] a\n[rank 0] b\n[rank 1] c\n", err
    proc = hpcgpu(tmp_path, "logs", "old", "--rank", "1")  # the one-rank view is unchanged
    assert finish(proc)[0] == "c\n"


def test_all_with_rank_or_follow_and_a_run_without_logs_are_errors_saying_what_to_do(tmp_path):
    make_run(tmp_path, "empty")
    for args, says in ((("--all", "-f"), "cannot be combined with --follow"),
                       (("--dedup", "--rank", "2"), "cannot be combined with --rank"),
                       (("--all",), "no log for rank 0")):
        proc = hpcgpu(tmp_path, "logs", "empty", *args)
        _, err = finish(proc)
        assert proc.returncode == 2 and says in err, err
