"""Containers (inside one? which runtimes?) and Slurm (client tools, cluster reachable)."""

from __future__ import annotations

import subprocess
from collections import Counter

from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import CheckResult, Skip, check, fail, ok, warn

RUNTIMES = ("apptainer", "singularity", "docker", "podman", "enroot")
SLURM_TOOLS = ("sinfo", "srun", "sbatch", "squeue", "scontrol")
SINFO_TIMEOUT = 10.0
UNUSABLE_STATES = ("down", "drain", "fail", "unknown", "not_responding")


def container_kind(p: Probe) -> tuple[str, str] | None:
    """(runtime, evidence) when this process runs inside a container, else None."""
    env = p.env
    for var, kind in (("APPTAINER_CONTAINER", "apptainer"), ("SINGULARITY_CONTAINER", "singularity")):
        if env.get(var):
            return kind, f"{var}={env[var]}"
    if p.path("/.dockerenv").exists():
        return "docker", "/.dockerenv"
    if p.path("/run/.containerenv").exists():
        return "podman", "/run/.containerenv"
    if env.get("container"):
        return env["container"], f"container={env['container']}"
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes", "KUBERNETES_SERVICE_HOST"
    return None


@check("container")
def check_container(p: Probe) -> CheckResult:
    """Whether we run inside a container (its /dev/shm and GPU access then come from the runtime)."""
    found = container_kind(p)
    if not found:
        return ok("not inside a container", {"inside": False})
    kind, evidence = found
    return ok(f"inside {kind} ({evidence})", {"inside": True, "runtime": kind, "evidence": evidence})


@check("container_runtimes")
def check_container_runtimes(p: Probe) -> CheckResult:
    """Container runtimes on PATH (hpcgpu can launch ranks through any of them)."""
    found = {name: p.which(name) for name in RUNTIMES}
    found = {k: v for k, v in found.items() if v}
    if not found:
        raise Skip(f"none of {', '.join(RUNTIMES)} on PATH (only needed for container runs)")
    return ok(", ".join(found), {"runtimes": found})


@check("slurm_tools")
def check_slurm_tools(p: Probe) -> CheckResult:
    """Slurm's client commands are on PATH (needed by hpcgpu submit slurm)."""
    found = {t: p.which(t) for t in SLURM_TOOLS}
    missing = [t for t, path in found.items() if not path]
    if len(missing) == len(SLURM_TOOLS):
        raise Skip("no Slurm client tools on PATH (not a Slurm login/compute node)")
    if missing:
        return warn(f"missing: {', '.join(missing)}", "install the Slurm client package "
                    "(slurm-client / slurm) or load the site's slurm module", {"tools": found})
    try:
        version = p.run(["sinfo", "--version"], timeout=SINFO_TIMEOUT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = "version unknown"
    return ok(f"{version} ({', '.join(SLURM_TOOLS)})", {"tools": found, "version": version})


def parse_sinfo(text: str) -> dict[str, Counter]:
    """`sinfo -h -o '%P %a %D %T'` lines -> {partition: Counter(state -> nodes)}; '*' marks default."""
    parts: dict[str, Counter] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 4:
            continue
        part, avail, nodes, state = fields
        counter = parts.setdefault(part, Counter())
        counter[state.rstrip("*~#!%$@^-+").lower() if avail == "up" else "down"] += int(nodes)
    return parts


@check("slurm_cluster")
def check_slurm_cluster(p: Probe) -> CheckResult:
    """The Slurm controller answers sinfo within a short timeout and has usable nodes."""
    if not p.which("sinfo"):
        raise Skip("sinfo not on PATH")
    hint = ("the controller is unreachable: check `scontrol ping`, that munged runs, "
            "and SLURM_CONF / the slurm.conf this node uses")
    try:
        proc = p.run(["sinfo", "-h", "-o", "%P %a %D %T"], timeout=SINFO_TIMEOUT)
    except subprocess.TimeoutExpired:
        return fail(f"sinfo did not answer within {SINFO_TIMEOUT:.0f} s", hint)
    if proc.returncode != 0:
        first = (proc.stdout or "").strip().splitlines()[:1] or [f"exit status {proc.returncode}"]
        return fail(f"sinfo failed: {first[0]}", hint)
    parts = parse_sinfo(proc.stdout)
    if not parts:
        return warn("sinfo lists no partition", "ask the admins which partition to use")
    data = {p_: dict(c) for p_, c in parts.items()}
    listing = "; ".join(f"{p_}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
                        for p_, c in parts.items())
    usable = sum(n for c in parts.values() for s, n in c.items() if s not in UNUSABLE_STATES)
    if not usable:
        return warn(f"no usable node: {listing}", "every node is down or drained: "
                    "`sinfo -R` shows why; ask the admins", data)
    return ok(listing, data)
