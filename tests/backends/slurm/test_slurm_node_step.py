"""The nested pyxis step (hpcgpu.backends.slurm.node_step): its srun line."""

from __future__ import annotations

from hpcgpu.backends.slurm.node_step import nested_step_argv


def test_the_nested_step_carries_the_srun_arguments_it_was_given():
    argv = nested_step_argv(["--cpus-per-task=16", "--container-image=img"], ["python3", "-m", "hpcgpu", "train"],
                            {"SLURMD_NODENAME": "n3", "SLURM_NODEID": "2"})
    assert argv[:5] == ["srun", "--overlap", "--nodes=1", "--ntasks=1", "--nodelist=n3"]
    assert argv.index("--cpus-per-task=16") < argv.index("env")
    assert argv[-6:] == ["env", "SLURM_NODEID=2", "python3", "-m", "hpcgpu", "train"]
