"""detect_rank over environment dictionaries: torchrun first, then Slurm, then a single process."""

import pytest

from hpcgpu.worker.rank import RankInfo, detect_rank

TORCHRUN = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1"}
SLURM = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4", "SLURM_NODEID": "1",
         "SLURM_JOB_NUM_NODES": "2"}

CASES = [
    ("nothing set: one process", {}, RankInfo(0, 0, 1, 1, 0, "single")),
    ("torchrun", TORCHRUN, RankInfo(5, 1, 8, 4, 1, "torchrun")),
    ("torchrun inside a Slurm allocation wins over Slurm", {**SLURM, **TORCHRUN}, RankInfo(5, 1, 8, 4, 1, "torchrun")),
    ("torchrun without LOCAL_WORLD_SIZE or GROUP_RANK",
     {"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4"}, RankInfo(3, 3, 4, 4, 0, "torchrun")),
    ("srun, one task per rank", SLURM, RankInfo(3, 1, 4, 2, 1, "slurm")),
    ("srun with SLURM_NTASKS_PER_NODE=2(x3)",
     {"SLURM_PROCID": "4", "SLURM_LOCALID": "0", "SLURM_NTASKS": "6", "SLURM_NODEID": "2",
      "SLURM_NTASKS_PER_NODE": "2(x3)"}, RankInfo(4, 0, 6, 2, 2, "slurm")),
    ("srun on one node, no node count", {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "1"},
     RankInfo(0, 0, 1, 1, 0, "slurm")),
    ("a Slurm batch step without srun task variables is a single process",
     {"SLURM_JOB_ID": "12", "SLURM_NNODES": "2"}, RankInfo(0, 0, 1, 1, 0, "single")),
    ("partial torchrun variables fall through to Slurm", {"RANK": "1", **SLURM}, RankInfo(3, 1, 4, 2, 1, "slurm")),
]


@pytest.mark.parametrize("env,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_detect_rank(env, expected):
    assert detect_rank(env) == expected


def test_is_main_only_on_rank_zero():
    assert detect_rank({}).is_main
    assert not detect_rank(TORCHRUN).is_main
