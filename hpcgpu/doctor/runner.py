"""The checks in the order the table shows them, and the function that runs them all."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

from hpcgpu.doctor import checks_cluster as cl
from hpcgpu.doctor import checks_env as env
from hpcgpu.doctor import checks_gpu as gpu
from hpcgpu.doctor import checks_software as sw
from hpcgpu.doctor import checks_system as sys_
from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import CheckResult
from hpcgpu.host.secrets import marked_names, scrub

# torch-free checks first: they still report when importing torch is what is broken
STATIC_CHECKS: tuple[Callable[[Probe], CheckResult], ...] = (
    sw.check_python,
    gpu.check_gpus, gpu.check_gpu_models, gpu.check_gpu_load, gpu.check_gpu_ecc,
    gpu.check_gpu_modes, gpu.check_gpu_topology,
    env.check_cuda_visible_devices, env.check_slurm_tasks, env.check_slurm_gpus, env.check_nccl_env,
    sys_.check_shm, sys_.check_memlock, sys_.check_infiniband, sys_.check_hostname,
    sys_.check_rendezvous_port, sys_.check_checkpoint_dir,
    cl.check_container, cl.check_container_runtimes, cl.check_slurm_tools, cl.check_slurm_cluster,
    sw.check_torch, sw.check_cuda, sw.check_cudnn, sw.check_nccl,
)


def selected_checks(functional: bool = True, slurm: bool = False
                    ) -> list[Callable[[Probe], CheckResult]]:
    """The checks to run: the static ones, then the local all-reduce, then the Slurm one."""
    checks = list(STATIC_CHECKS)
    if functional:
        from hpcgpu.doctor.functional import check_allreduce

        checks.append(check_allreduce)
    if slurm:
        from hpcgpu.doctor.slurm_allreduce import check_allreduce_slurm

        checks.append(check_allreduce_slurm)
    return checks


def scrubbed(result: CheckResult, env: Mapping[str, str]) -> CheckResult:
    """result with the values of env's secret variables (host.secrets; HPCGPU_SECRET_ENV marks more)
    replaced by <redacted> wherever they appear: a check may quote a variable or a tool's output,
    and the report is meant to be pasted into a public issue."""
    marked = marked_names(env)
    return replace(result, detail=scrub(result.detail, env, marked), hint=scrub(result.hint, env, marked),
                   data=scrub(result.data, env, marked))


def run_doctor(probe: Probe, functional: bool = True, slurm: bool = False,
               on_start: Callable[[int, int, str], None] | None = None) -> list[CheckResult]:
    """Run every selected check against probe; on_start(i, n, name) announces each one."""
    checks, results = selected_checks(functional, slurm), []
    try:
        for i, fn in enumerate(checks, 1):
            if on_start:
                on_start(i, len(checks), fn.check_name)  # type: ignore[attr-defined]
            results.append(scrubbed(fn(probe), probe.env))
    finally:
        probe.close()
    return results
