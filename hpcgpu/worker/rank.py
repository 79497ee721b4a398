"""Rank detection: an ordered list of tiny detectors over an environment mapping.

torchrun's variables come first because torchrun can itself run inside a Slurm allocation
(the Slurm variables then describe the node agent, not the rank). Pure: no torch import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    source: str  # which detector found it: "torchrun", "slurm" or "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(env: Mapping[str, str], name: str) -> int:
    return int(env[name])


def from_torchrun(env: Mapping[str, str]) -> Optional[RankInfo]:
    """torchrun / torch elastic sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK."""
    if not all(k in env for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return None
    local_world = int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
    return RankInfo(
        rank=_int(env, "RANK"),
        local_rank=_int(env, "LOCAL_RANK"),
        world_size=_int(env, "WORLD_SIZE"),
        local_world_size=local_world,
        node_rank=int(env.get("GROUP_RANK", _int(env, "RANK") // max(local_world, 1))),
        source="torchrun",
    )


def from_slurm(env: Mapping[str, str]) -> Optional[RankInfo]:
    """srun with one task per rank sets SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NODEID."""
    if not all(k in env for k in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS")):
        return None
    ntasks = _int(env, "SLURM_NTASKS")
    nnodes = int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", "1")))
    # SLURM_NTASKS_PER_NODE looks like "2" or "2(x3)"; absent when not set explicitly
    per_node = env.get("SLURM_NTASKS_PER_NODE")
    local_world = int(per_node.split("(")[0]) if per_node else max(ntasks // max(nnodes, 1), 1)
    return RankInfo(
        rank=_int(env, "SLURM_PROCID"),
        local_rank=_int(env, "SLURM_LOCALID"),
        world_size=ntasks,
        local_world_size=local_world,
        node_rank=int(env.get("SLURM_NODEID", "0")),
        source="slurm",
    )


def single_process(env: Mapping[str, str]) -> RankInfo:
    """No launcher: one process, rank 0 of 1."""
    return RankInfo(0, 0, 1, 1, 0, "single")


DETECTORS: tuple[Callable[[Mapping[str, str]], Optional[RankInfo]], ...] = (from_torchrun, from_slurm)


def detect_rank(env: Mapping[str, str] | None = None) -> RankInfo:
    """Return the first detector's answer; a single process when none matches."""
    env = os.environ if env is None else env
    for detector in DETECTORS:
        info = detector(env)
        if info is not None:
            return info
    return single_process(env)
