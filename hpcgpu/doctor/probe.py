"""Probe: everything the checks read from the machine, injectable so tests drive checks with fakes.

The defaults touch the real machine; nothing here imports torch until `torch_info()` is called.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hpcgpu.doctor.result import Fail, Skip


def run_command(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    """Run argv with stdout+stderr merged; on timeout kill its whole process group, then re-raise."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(env) if env is not None else None, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = _stop_group(proc)
        raise subprocess.TimeoutExpired(argv, timeout, output=out) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, "")


def _stop_group(proc: subprocess.Popen, grace: float = 5.0) -> str:
    """SIGTERM the whole process group, SIGKILL after a grace period; return the output so far."""
    # torchrun's ranks are grandchildren, and srun needs SIGTERM (not KILL) to end its job step
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.communicate(timeout=wait)[0] or ""
        except subprocess.TimeoutExpired:
            continue
    return ""


def bind_port(host: str, port: int) -> int:
    """Bind host:port (0 = any free port) and release it; return the port, OSError if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, port))
        return s.getsockname()[1]


def memlock_limit() -> int:
    """Soft RLIMIT_MEMLOCK in bytes (`ulimit -l`, which prints KiB); -1 means unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return -1 if soft == resource.RLIM_INFINITY else soft


def read_torch_info() -> dict[str, Any]:
    """Versions and capabilities of the installed torch; imports torch (about 1.5 s)."""
    from hpcgpu.doctor.allreduce_worker import version_text

    try:
        import torch
        import torch.distributed as dist
    except Exception as e:  # noqa: BLE001 - a broken install is a finding, not a crash
        return {"error": f"{type(e).__name__}: {e}"}
    info: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": None, "nccl": None, "cuda_available": False, "device_count": 0,
                            "distributed": dist.is_available(),
                            "gloo": dist.is_available() and dist.is_gloo_available(),
                            "nccl_backend": dist.is_available() and dist.is_nccl_available()}
    if torch.version.cuda:
        info["cuda_available"] = torch.cuda.is_available()
        info["device_count"] = torch.cuda.device_count()
        info["cudnn"] = torch.backends.cudnn.version()
        try:
            info["nccl"] = version_text(torch.cuda.nccl.version())
        except Exception:  # noqa: BLE001 - CUDA build without NCCL
            info["nccl"] = None
    return info


def load_nvml() -> Any:
    """The pynvml module (from nvidia-ml-py); Skip when it is not installed."""
    try:
        import pynvml
    except ImportError as e:
        raise Skip(f"pynvml not importable ({e}): pip install nvidia-ml-py") from None
    return pynvml


#: why a GPU NVML lists may be denied to us; shown wherever hidden GPUs are reported
HIDDEN_WHY = "the others belong to other jobs or are hidden by the cgroup"


def nvml_error_code(error: BaseException) -> int | None:
    """NVML's return code carried by a pynvml NVMLError (its `value`), None for anything else."""
    value = getattr(error, "value", None)
    return value if isinstance(value, int) else None


@dataclass
class Probe:
    """Inputs of the checks: environment, file-system root, tools, NVML and torch, plus options."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    root: Path = Path("/")  # prefix for /sys, /dev/shm, /.dockerenv ... (tests use a tmp dir)
    which: Callable[[str], str | None] = shutil.which
    run: Callable[..., subprocess.CompletedProcess] = run_command
    nvml: Any = None  # a pynvml-like object; None loads the real one on first use
    torch_loader: Callable[[], dict[str, Any]] = read_torch_info
    disk_usage: Callable[[str], Any] = shutil.disk_usage
    memlock: Callable[[], int] = memlock_limit
    hostname: Callable[[], str] = socket.gethostname
    resolve: Callable[[str], str] = socket.gethostbyname
    bind: Callable[[str, int], int] = bind_port
    python: tuple[str, str] = (sys.version.split()[0], sys.executable)
    checkpoint_dir: Path = Path("runs")
    nproc: int | None = None  # ranks for the functional test (default: GPUs, or 2 CPU ranks)
    timeout: float = 180.0  # seconds for the whole functional test
    slurm_nodes: int = 2  # nodes for the Slurm all-reduce (3+: pairs name a bad node)
    _handles: list[Any] | None = field(default=None, init=False, repr=False)
    _hidden: list[int] = field(default_factory=list, init=False, repr=False)  # NVML indices
    _nvml_error: Skip | Fail | None = field(default=None, init=False, repr=False)
    _torch: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def path(self, absolute: str) -> Path:
        """A system path such as /sys/class/net under this probe's root."""
        return self.root / absolute.lstrip("/")

    def gpu_handles(self) -> list[Any]:
        """NVML handles of the GPUs this process may use (ignores CUDA_VISIBLE_DEVICES); Skip if none.

        GPUs NVML lists but denies us (other jobs' GPUs under a Slurm cgroup) are left out, as
        nvidia-smi leaves them out; `hidden_gpus()` names them.
        """
        if self._handles is None and self._nvml_error is None:
            try:
                self._open_nvml()
            except (Skip, Fail) as e:
                self._nvml_error = e
        if self._nvml_error is not None:
            raise self._nvml_error
        if not self._handles and self._hidden:
            raise Skip(f"none of the {len(self._hidden)} GPUs on this node is accessible (they "
                       "belong to other jobs or are hidden by the cgroup)")
        if not self._handles:
            raise Skip("NVML found no NVIDIA GPU on this machine")
        return self._handles

    def hidden_gpus(self) -> list[int]:
        """NVML indices of the node's GPUs that answer 'no permission' (call after gpu_handles)."""
        return list(self._hidden)

    def _open_nvml(self) -> None:
        if self.nvml is None:
            self.nvml = load_nvml()
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as e:
            if any(s in str(e) for s in ("Library Not Found", "Driver Not Loaded")):
                raise Skip(f"no NVIDIA driver (NVML: {e})") from None
            # e.g. "Driver/library version mismatch" after a driver upgrade without a reboot
            raise Fail(f"NVML cannot start: {e}", "compare `nvidia-smi` with the installed driver; "
                       "after a driver upgrade reboot (or reload the nvidia kernel modules)") from None
        handles, hidden, index = [], [], 0
        try:
            for index in range(self.nvml.nvmlDeviceGetCount()):
                handle = self._open_gpu(index)
                if handle is None:
                    hidden.append(index)
                else:
                    handles.append(handle)
        except self.nvml.NVMLError as e:
            self._handles = []  # opened: close() must still shut NVML down
            raise Fail(f"NVML cannot open GPU {index}: {e}",
                       "the GPU fell off the bus or is not accessible: check `nvidia-smi` and "
                       "dmesg (Xid errors); drain the node and ask for a GPU reset") from None
        self._handles, self._hidden = handles, hidden

    def _open_gpu(self, index: int) -> Any:
        """GPU index's handle, or None when NVML says this process may not use it.

        In a partial-node Slurm job (cgroup ConstrainDevices) NVML still counts every GPU of the
        node, but the job's missing GPUs answer NVML_ERROR_NO_PERMISSION, from the handle or from
        the first query. That is the cgroup working, not a broken GPU; any other error (GPU is
        lost, unknown error) is, and propagates to the "fell off the bus" failure.
        """
        nvml = self.nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            nvml.nvmlDeviceGetUUID(handle)  # a cheap query: some drivers deny only on use
        except nvml.NVMLError as e:
            if nvml_error_code(e) == getattr(nvml, "NVML_ERROR_NO_PERMISSION", 4):
                return None
            raise
        return handle

    def gpu_count(self) -> int:
        """GPUs this process may use, 0 without a driver or any (a broken GPU raises Fail)."""
        try:
            return len(self.gpu_handles())
        except Skip:
            return 0

    def torch_info(self) -> dict[str, Any]:
        """torch's versions, read once (the first call imports torch)."""
        if self._torch is None:
            self._torch = self.torch_loader()
        return self._torch

    def close(self) -> None:
        """Release NVML if this probe opened it."""
        if self._handles is not None and self.nvml is not None:  # NVML was initialised
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down is best effort
                pass
            self._handles = None
