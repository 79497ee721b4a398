"""GPU checks through NVML: inventory, mixed models, load, ECC errors, modes and topology."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import Any

from hpcgpu.doctor.probe import HIDDEN_WHY, Probe
from hpcgpu.doctor.result import CheckResult, Skip, check, fail, human_bytes, ok, warn

BUSY_UTIL_PCT = 10
BUSY_MEMORY_BYTES = 1 << 30
MIG_NO_UTIL = "GPU utilisation is not available on MIG instances"
TOPOLOGY_NAMES = {0: "same board", 10: "PIX (one PCIe switch)", 20: "PXB (several PCIe switches)",
                  30: "PHB (PCIe host bridge)", 40: "NODE (same NUMA node)",
                  50: "SYS (crosses CPU sockets)"}


def nvml_text(value: Any) -> str:
    """NVML strings are bytes in old pynvml releases, str in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(fn: Any, *args: Any) -> Any:
    """An NVML query that some GPUs do not support: its value, or None."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends
        return None


def gpu_inventory(p: Probe) -> list[dict[str, Any]]:
    """Index, model, UUID and memory of each GPU NVML sees."""
    nvml, gpus = p.nvml, []
    for i, h in enumerate(p.gpu_handles()):
        mem = nvml.nvmlDeviceGetMemoryInfo(h)
        gpus.append({"index": i, "name": nvml_text(nvml.nvmlDeviceGetName(h)),
                     "uuid": nvml_text(nvml.nvmlDeviceGetUUID(h)),
                     "memory_total": int(mem.total), "memory_used": int(mem.used)})
    return gpus


@check("gpus")
def check_gpus(p: Probe) -> CheckResult:
    """How many GPUs, which models, how much memory, which driver."""
    gpus = gpu_inventory(p)
    driver = nvml_text(p.nvml.nvmlSystemGetDriverVersion())
    models = Counter(f"{g['name']} ({human_bytes(g['memory_total'])})" for g in gpus)
    listing = ", ".join(f"{n} x {m}" for m, n in models.items())
    hidden = p.hidden_gpus()
    if not hidden:
        return ok(f"{listing}; driver {driver}", {"driver": driver, "gpus": gpus})
    # a partial-node job: the other GPUs are not ours to check, and not broken
    access = f"{len(gpus)} of {len(gpus) + len(hidden)} GPUs accessible ({HIDDEN_WHY})"
    return ok(f"{access}; {listing}; driver {driver}",
              {"driver": driver, "gpus": gpus, "hidden_nvml_indices": hidden})


@check("gpu_models")
def check_gpu_models(p: Probe) -> CheckResult:
    """One GPU model per node: DDP runs at the pace, and memory, of the weakest GPU."""
    names = Counter(nvml_text(p.nvml.nvmlDeviceGetName(h)) for h in p.gpu_handles())
    if len(names) == 1:
        return ok(f"all {sum(names.values())} GPU(s) are {next(iter(names))}")
    listing = ", ".join(f"{n} x {m}" for m, n in names.items())
    return warn(f"mixed GPU models on one node: {listing}",
                "every rank waits for the slowest GPU and batch size must fit the smallest: "
                "set CUDA_VISIBLE_DEVICES to one model (or Slurm --gpus=<type>:N)",
                {"models": dict(names)})


def mig_enabled(nvml: Any, handle: Any) -> bool:
    """Whether MIG mode is on for this GPU (False where MIG is unsupported)."""
    mode = _optional(nvml.nvmlDeviceGetMigMode, handle)  # [current, pending]
    return mode is not None and mode[0] == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)


def util_note(nvml: Any, no_util: list[Any]) -> str:
    """Why some GPUs have no utilisation reading, said once, or ''."""
    if not no_util:
        return ""
    if any(mig_enabled(nvml, h) for h in no_util):
        # NVML answers NOT_SUPPORTED for utilisation on MIG GPUs: the busy test sees memory only
        return f"; {MIG_NO_UTIL} (memory checked only)"
    return f"; utilisation not reported by {len(no_util)} GPU(s) (memory checked only)"



@check("gpu_load")
def check_gpu_load(p: Probe) -> CheckResult:
    """GPUs already busy (another job or a leftover process) slow or crash training."""
    nvml, busy, rows, no_util = p.nvml, [], [], []
    for i, h in enumerate(p.gpu_handles()):
        util = _optional(nvml.nvmlDeviceGetUtilizationRates, h)
        used = int(nvml.nvmlDeviceGetMemoryInfo(h).used)
        pct = int(util.gpu) if util is not None else None
        rows.append({"index": i, "util_pct": pct, "memory_used": used})
        if pct is None:
            no_util.append(h)
        if (pct or 0) >= BUSY_UTIL_PCT or used >= BUSY_MEMORY_BYTES:
            busy.append(f"GPU{i} {pct if pct is not None else '?'}% busy, {human_bytes(used)} used")
    note = util_note(nvml, no_util)
    if busy:
        return warn("; ".join(busy) + note, "another process uses these GPUs (see nvidia-smi): "
                    "stop it, or ask Slurm for whole GPUs (--gpus-per-node, --exclusive)",
                    {"gpus": rows})
    return ok(f"{len(rows)} GPU(s) idle{note}", {"gpus": rows})


@check("gpu_ecc")
def check_gpu_ecc(p: Probe) -> CheckResult:
    """Uncorrected ECC errors since the driver loaded mean a GPU that will corrupt or crash jobs."""
    nvml, counts = p.nvml, {}
    for i, h in enumerate(p.gpu_handles()):
        counts[i] = _optional(nvml.nvmlDeviceGetTotalEccErrors, h,
                              nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)
    if all(c is None for c in counts.values()):
        raise Skip("ECC is not supported or not enabled on these GPUs")
    bad = {i: c for i, c in counts.items() if c}
    if bad:
        listing = ", ".join(f"GPU{i}: {c}" for i, c in bad.items())
        return fail(f"uncorrected ECC errors since boot: {listing}",
                    "drain this node and tell the admins; a GPU reset (nvidia-smi -r -i N) "
                    "clears volatile counts but not a failing GPU", {"uncorrected": counts})
    return ok(f"no uncorrected ECC errors on {len(counts)} GPU(s)", {"uncorrected": counts})


@check("gpu_modes")
def check_gpu_modes(p: Probe) -> CheckResult:
    """Compute mode (Prohibited forbids CUDA) and persistence mode (off: slow start per job)."""
    nvml, prohibited, no_persist, modes = p.nvml, [], [], {}
    for i, h in enumerate(p.gpu_handles()):
        mode = _optional(nvml.nvmlDeviceGetComputeMode, h)
        persist = _optional(nvml.nvmlDeviceGetPersistenceMode, h)
        modes[i] = {"compute_mode": mode, "persistence": persist}
        if mode == nvml.NVML_COMPUTEMODE_PROHIBITED:
            prohibited.append(f"GPU{i}")
        if persist is not None and persist != nvml.NVML_FEATURE_ENABLED:
            no_persist.append(f"GPU{i}")
    if prohibited:
        return fail(f"compute mode Prohibited on {', '.join(prohibited)}: no CUDA context allowed",
                    "nvidia-smi -c DEFAULT -i N (root), or ask the admins", {"gpus": modes})
    if no_persist:
        return warn(f"persistence mode off on {', '.join(no_persist)}",
                    "each job pays seconds of driver start-up: nvidia-smi -pm 1 (root) or run "
                    "nvidia-persistenced", {"gpus": modes})
    return ok("persistence on, compute mode allows CUDA", {"gpus": modes})


def active_nvlinks(nvml: Any, handle: Any) -> int:
    """Count of NVLinks in the active state; 0 on GPUs without NVLink."""
    active = 0
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            active += nvml.nvmlDeviceGetNvLinkState(handle, link) == nvml.NVML_FEATURE_ENABLED
        except Exception:  # noqa: BLE001 - links past the GPU's count raise
            break
    return active


@check("gpu_topology")
def check_gpu_topology(p: Probe) -> CheckResult:
    """NVLink between all GPUs, else the PCIe path of the worst GPU pair."""
    nvml, handles = p.nvml, p.gpu_handles()
    if len(handles) < 2:
        raise Skip("one GPU: no GPU-to-GPU traffic")
    links = [active_nvlinks(nvml, h) for h in handles]
    levels = {f"{i}-{j}": int(nvml.nvmlDeviceGetTopologyCommonAncestor(handles[i], handles[j]))
              for i, j in combinations(range(len(handles)), 2)}
    data = {"nvlinks": links, "pcie_levels": levels}
    if all(links):
        return ok(f"NVLink on every GPU ({min(links)}-{max(links)} active links each)", data)
    pair, worst = max(levels.items(), key=lambda kv: kv[1])
    missing = ", ".join(f"GPU{i}" for i, n in enumerate(links) if not n)
    where = "PCIe only" if not any(links) else f"no NVLink on {missing}"
    detail = f"{where}; worst pair GPU{pair.replace('-', '-GPU')}: {TOPOLOGY_NAMES.get(worst, worst)}"
    if worst >= nvml.NVML_TOPOLOGY_SYSTEM:
        return warn(detail, "GPU traffic crosses the CPU interconnect (slow all-reduce): use GPUs "
                    "under one socket (CUDA_VISIBLE_DEVICES) or expect lower bandwidth", data)
    if any(links):
        return warn(detail, "some GPUs are NVLinked and some are not: all-reduce runs at PCIe "
                    "speed; check `nvidia-smi topo -m` and the NVLink bridges", data)
    return ok(detail, data)
