"""How docker and podman are given GPUs: shared by the host's container prefix (every GPU, local
runs) and the Slurm node step that resolves the job's own GPUs on the node. Stdlib only."""

from __future__ import annotations

from typing import Sequence


def oci_gpu_args(runtime: str, devices: Sequence[str] | None) -> list[str]:
    """The flags that give a docker/podman container GPUs: devices None = every GPU of the machine,
    else exactly those (UUIDs); an empty list = none.

    docker: the NVIDIA Container Toolkit's `--gpus`. Its value is parsed as CSV, so a list of
    devices needs inner double quotes (`--gpus '"device=A,B"'` in a shell; here one argv word).
    podman: CDI names (`nvidia-ctk cdi generate`), one `--device` per GPU; the generated spec must
    name devices by UUID (`--device-name-strategy=uuid`, or index and uuid).
    """
    if devices is None:
        return ["--gpus", "all"] if runtime == "docker" else ["--device", "nvidia.com/gpu=all"]
    if not devices:
        return []
    if runtime == "docker":
        return ["--gpus", f'"device={",".join(devices)}"']
    return [arg for d in devices for arg in ("--device", f"nvidia.com/gpu={d}")]
