"""Environment checks: CUDA_VISIBLE_DEVICES, Slurm's task and GPU variables, suspicious NCCL_*."""

from __future__ import annotations

import re
from typing import Mapping

from hpcgpu.doctor.checks_gpu import nvml_text
from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import FAIL, WARN, CheckResult, Skip, check, fail, ok, warn
from hpcgpu.host.secrets import marked_names, redact

ONE_TASK_HINT = ("hpcgpu runs ONE task per node and starts one rank per GPU itself: use "
                 "--ntasks-per-node=1 (hpcgpu submit slurm does), with --gpus-per-node=N")


def parse_visible_devices(value: str, uuids: list[str]) -> tuple[list[int], str]:
    """CUDA's reading of CUDA_VISIBLE_DEVICES: chosen NVML indices, and why it stopped early."""
    chosen: list[int] = []
    for token in (t.strip() for t in value.split(",")) if value.strip() else ():
        if re.fullmatch(r"-?\d+", token):
            index = int(token)
            if not 0 <= index < len(uuids):
                return chosen, f"index {token} does not exist ({len(uuids)} GPU(s))"
        else:
            found = [i for i, u in enumerate(uuids) if u.startswith(token) or u == f"GPU-{token}"]
            if len(found) != 1:
                return chosen, f"{token!r} matches no GPU UUID"
            index = found[0]
        if index in chosen:
            return chosen, f"GPU {index} is listed twice"
        chosen.append(index)
    return chosen, ""


def visible_gpu_count(p: Probe) -> int:
    """GPUs a CUDA process here can use: NVML's GPUs filtered by CUDA_VISIBLE_DEVICES."""
    count = p.gpu_count()
    value = p.env.get("CUDA_VISIBLE_DEVICES")
    if value is None or not count:
        return count
    uuids = [nvml_text(p.nvml.nvmlDeviceGetUUID(h)) for h in p.gpu_handles()]
    return len(parse_visible_devices(value, uuids)[0])


@check("cuda_visible_devices")
def check_cuda_visible_devices(p: Probe) -> CheckResult:
    """CUDA_VISIBLE_DEVICES names GPUs that exist, each once; an invalid entry hides the rest."""
    value = p.env.get("CUDA_VISIBLE_DEVICES")
    count = p.gpu_count()
    if value is None:
        if not count:
            raise Skip("unset, and no GPU")
        return ok(f"unset: all {count} GPU(s) visible")
    if not count:
        raise Skip(f"set to {value!r}, but there is no GPU to compare with")
    if value.startswith("MIG-"):
        return ok(f"{value!r}: MIG instances (not verified)")
    uuids = [nvml_text(p.nvml.nvmlDeviceGetUUID(h)) for h in p.gpu_handles()]
    chosen, problem = parse_visible_devices(value, uuids)
    data = {"value": value, "visible": chosen}
    if not chosen:
        why = f": {problem}" if problem else ""
        return fail(f"{value!r} hides every GPU{why}",
                    "unset CUDA_VISIBLE_DEVICES or list GPU indices 0.."
                    f"{count - 1}; under Slurm let --gpus-per-node set it", data)
    if problem:
        return fail(f"{value!r}: {problem}; CUDA stops there and sees only {chosen}",
                    f"list each GPU once, indices 0..{count - 1} or full UUIDs (nvidia-smi -L)", data)
    return ok(f"{value!r}: {len(chosen)} of {count} GPU(s) visible", data)


def tasks_per_node(env: Mapping[str, str]) -> int | None:
    """Most tasks on any node: SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE ('2(x3),1')."""
    value = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not value:
        return None
    return max(int(part.split("(")[0]) for part in value.split(","))


def expand_nodelist(text: str) -> list[str]:
    """Slurm's compressed host list ('gpu[01-03,7],login1') as names, like scontrol show hostnames."""
    hosts: list[str] = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", text):
        m = re.match(r"([^\[]*)\[([^\]]*)\](.*)", item)
        if not m:
            hosts.append(item)
            continue
        prefix, ranges, rest = m.groups()
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            for n in range(int(lo), int(hi or lo) + 1):
                hosts += [f"{prefix}{n:0{len(lo)}d}{tail}" for tail in expand_nodelist(rest) or [""]]
    return hosts


@check("slurm_tasks")
def check_slurm_tasks(p: Probe) -> CheckResult:
    """Inside a Slurm job: one task per node (the classic tasks-vs-GPUs misconfiguration)."""
    if "SLURM_JOB_ID" not in p.env:
        raise Skip("not inside a Slurm job")
    per_node = tasks_per_node(p.env)
    nodes = p.env.get("SLURM_JOB_NUM_NODES") or p.env.get("SLURM_NNODES") or "?"
    data = {"tasks_per_node": per_node, "nodes": nodes}
    if per_node is None:
        return warn("Slurm did not say how many tasks run per node", ONE_TASK_HINT, data)
    if per_node > 1:
        return fail(f"{per_node} tasks per node on {nodes} node(s): each task would start a "
                    "rank per GPU, so ranks multiply and fight over GPUs", ONE_TASK_HINT, data)
    return ok(f"1 task per node on {nodes} node(s)", data)


@check("slurm_gpus")
def check_slurm_gpus(p: Probe) -> CheckResult:
    """GPUs Slurm allocated on this node (SLURM_GPUS_ON_NODE, SLURM_JOB_GPUS) against those visible."""
    if "SLURM_JOB_ID" not in p.env:
        raise Skip("not inside a Slurm job")
    allocated = p.env.get("SLURM_GPUS_ON_NODE")
    visible = visible_gpu_count(p)
    data = {"gpus_on_node": allocated, "job_gpus": p.env.get("SLURM_JOB_GPUS"), "visible": visible}
    if allocated is None:
        if visible:
            return warn(f"the job asked for no GPU, yet {visible} are visible (not confined by "
                        "cgroups: other jobs may use them too)",
                        "request GPUs: --gpus-per-node=N (or --gres=gpu:N)", data)
        raise Skip("the job asked for no GPU and none is visible")
    allocated_n = int(allocated)
    if visible < allocated_n:
        return fail(f"Slurm allocated {allocated_n} GPU(s) on this node but only {visible} "
                    "visible", "do not override CUDA_VISIBLE_DEVICES inside the job; check the "
                    "node's gres.conf and that the NVIDIA driver works (nvidia-smi)", data)
    if visible > allocated_n:
        return warn(f"Slurm allocated {allocated_n} GPU(s) but {visible} are visible: ranks "
                    "may land on other jobs' GPUs", "ask the admins for ConstrainDevices=yes "
                    "in cgroup.conf, or keep Slurm's CUDA_VISIBLE_DEVICES", data)
    return ok(f"{allocated_n} GPU(s) allocated (SLURM_JOB_GPUS={data['job_gpus']}), "
              f"{visible} visible", data)


def interface_matches(spec: str, names: list[str]) -> list[str]:
    """Interfaces NCCL_SOCKET_IFNAME selects: prefixes, '=' exact, '^' excludes (NCCL's rules)."""
    exclude = spec.startswith("^")
    spec = spec.lstrip("^")
    exact = spec.startswith("=")
    wanted = [w for w in spec.lstrip("=").split(",") if w]
    hit = [n for n in names if any(n == w if exact else n.startswith(w) for w in wanted)]
    return [n for n in names if n not in hit] if exclude else hit


def _interface_problems(p: Probe, nics: list[str], ib: list[str],
                        shown: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """Variables naming missing interfaces; messages quote values from shown (secrets redacted)."""
    env, found = p.env, []
    for var in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        if env.get(var) and not interface_matches(env[var], nics):
            found.append((FAIL, f"{var}={shown[var]} matches no interface ({', '.join(nics)})",
                          f"set {var} to one of {', '.join(nics)} (see `ip -br addr`) or unset it"))
    hcas = [h.lstrip("^=").split(":")[0] for h in env.get("NCCL_IB_HCA", "").split(",") if h]
    if hcas and not env["NCCL_IB_HCA"].startswith("^") and not any(
            i.startswith(h) for h in hcas for i in ib):
        found.append((WARN, f"NCCL_IB_HCA={shown['NCCL_IB_HCA']} matches no InfiniBand device",
                      f"InfiniBand devices here: {', '.join(ib) or 'none'}"))
    return found


def _flag_problems(env: Mapping[str, str], ib: list[str], shown: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """Variables that disable fast paths; messages quote values from shown (secrets redacted)."""
    found = []
    if env.get("NCCL_P2P_DISABLE") == "1":
        found.append((WARN, "NCCL_P2P_DISABLE=1: GPU-to-GPU copies go through host memory",
                      "unset it unless a known driver/IOMMU bug needs it (NCCL_P2P_LEVEL is finer)"))
    if env.get("NCCL_IB_DISABLE") == "1" and ib:
        found.append((WARN, f"NCCL_IB_DISABLE=1 although InfiniBand is present ({', '.join(ib)})",
                      "unset it: inter-node traffic falls back to TCP sockets"))
    if env.get("NCCL_SHM_DISABLE") == "1":
        found.append((WARN, "NCCL_SHM_DISABLE=1: intra-node fallback goes through the network",
                      "unset it; if /dev/shm is too small, enlarge it instead (--shm-size)"))
    if env.get("NCCL_DEBUG", "").upper() == "TRACE":
        found.append((WARN, "NCCL_DEBUG=TRACE logs every call and slows training",
                      "use NCCL_DEBUG=INFO or WARN"))
    for var in ("NCCL_ALGO", "NCCL_PROTO"):
        if env.get(var):
            found.append((WARN, f"{var}={shown[var]} overrides NCCL's tuning",
                          f"unset {var} unless you are benchmarking"))
    return found


@check("nccl_env")
def check_nccl_env(p: Probe) -> CheckResult:
    """NCCL_*/GLOO_* variables that are set and disable fast paths or name missing interfaces."""
    nics = sorted(d.name for d in p.path("/sys/class/net").iterdir()) \
        if p.path("/sys/class/net").is_dir() else []
    ib_dir = p.path("/sys/class/infiniband")
    ib = sorted(d.name for d in ib_dir.iterdir()) if ib_dir.is_dir() else []
    # values as the run's files show them (secrets redacted): a report is pasted into public issues
    nccl_vars = redact({k: v for k, v in sorted(p.env.items()) if k.startswith(("NCCL_", "GLOO_"))},
                       marked_names(p.env))
    problems = _interface_problems(p, nics, ib, nccl_vars) + _flag_problems(p.env, ib, nccl_vars)
    data = {"set": nccl_vars, "interfaces": nics}
    if not problems:
        listed = ", ".join(f"{k}={v}" for k, v in nccl_vars.items())
        return ok(listed or "no NCCL_*/GLOO_* variable set (NCCL's defaults)", data)
    worst = FAIL if any(s == FAIL for s, _, _ in problems) else WARN
    result = fail if worst == FAIL else warn
    return result("; ".join(d for _, d, _ in problems), "; ".join(h for _, _, h in problems), data)

