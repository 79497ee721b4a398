"""The functional test: a real all-reduce across local ranks (or across Slurm nodes with --slurm)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import hpcgpu
from hpcgpu.doctor.allreduce_worker import RESULT_MARKER
from hpcgpu.doctor.checks_env import visible_gpu_count
from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import CheckResult, Skip, check, fail, human_bytes, ok, warn

GLOO_SIZES, GLOO_ITERS = (64 << 10, 1 << 20, 16 << 20), 10
NCCL_SIZES, NCCL_ITERS = (1 << 20, 32 << 20, 256 << 20), 20
TAIL_LINES = 25
# NCCL_DEBUG=INFO prints one line per channel and peer, e.g.
# "Channel 00/0 : 0[0] -> 1[1] via P2P/IPC/read" or "... [send] via NET/IB/0/GDRDMA"
TRANSPORT_RE = re.compile(r"\bvia (P2P/[A-Za-z]+|NET/[A-Za-z]+|SHM|CollNet[A-Za-z]*|NVLS)")
FAILED_HINT = ("read the output tail (--json or --report); usual causes: a firewall between "
               "nodes, NCCL_SOCKET_IFNAME naming the wrong interface, a small /dev/shm, or a "
               "rank that crashed (its traceback is in the tail)")


def parse_transports(output: str) -> dict[str, int]:
    """Count of NCCL connections per transport found in NCCL_DEBUG=INFO output."""
    return dict(Counter(m.group(1) for m in TRANSPORT_RE.finditer(output)))


def nccl_warnings(output: str) -> list[str]:
    """NCCL's own 'NCCL WARN' lines, without their host:pid prefix."""
    return [line.split("NCCL WARN", 1)[1].strip() for line in output.splitlines()
            if "NCCL WARN" in line]


def tail(output: str | bytes | None, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a command's output."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return (output or "").rstrip().splitlines()[-lines:]


def _error_line(output: str) -> str:
    for line in reversed(output.splitlines()):
        if re.search(r"(Error|error:|Exception|WARN|timed out)", line):
            return line.strip()[:200]
    return "no error message"


def worker_argv(out: str, backend: str, sizes: tuple[int, ...], iters: int) -> list[str]:
    """The worker module and its arguments, as torchrun's script part."""
    return ["-m", "hpcgpu.doctor.allreduce_worker", "--out", out, "--backend", backend,
            "--sizes", ",".join(map(str, sizes)), "--iters", str(iters)]


def torchrun_argv(nproc: int, worker: list[str]) -> list[str]:
    """torchrun on one node; c10d on 127.0.0.1:0 lets the OS choose a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
            f"--nproc-per-node={nproc}", "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0",
            "--max-restarts=0", *worker]


def child_env(p: Probe) -> dict[str, str]:
    """The probe's environment, plus NCCL's INFO log (for transports) and hpcgpu on PYTHONPATH."""
    env = dict(p.env)
    # the transport lines are INFO-level and must reach our stdout, not a user's log file
    if env.get("NCCL_DEBUG", "").upper() != "TRACE":
        env["NCCL_DEBUG"] = "INFO"
    env.pop("NCCL_DEBUG_FILE", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    root = str(Path(hpcgpu.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def plan_local(p: Probe) -> tuple[str, int, str]:
    """(backend, ranks, note): NCCL on every visible GPU, else gloo on 2 CPU ranks."""
    gpus = visible_gpu_count(p)
    if gpus and p.torch_info().get("cuda_available"):
        nproc = p.nproc or gpus
        if nproc > gpus:
            raise ValueError(f"--nproc {nproc} is more than the {gpus} visible GPU(s)")
        return "nccl", nproc, ""
    note = f"{gpus} GPU(s) unusable by torch, testing gloo on CPU; " if gpus else ""
    return "gloo", p.nproc or 2, note


def run_launch(p: Probe, argv: list[str], out: Path | None
               ) -> tuple[dict | None, str, CheckResult | None]:
    """Run a launch command; (results, output, None) or (None, output, a fail result)."""
    try:
        proc = p.run(argv, timeout=p.timeout, env=child_env(p))
    except subprocess.TimeoutExpired as e:
        text = e.output.decode(errors="replace") if isinstance(e.output, bytes) else e.output or ""
        return None, text, fail(f"no result within {p.timeout:.0f} s (a rank hangs: "
                                f"{_error_line(text)})", FAILED_HINT, {"output_tail": tail(text)})
    text = proc.stdout or ""
    found = [line for line in text.splitlines() if line.startswith(RESULT_MARKER)]
    res = json.loads(out.read_text()) if out is not None and out.is_file() else \
        json.loads(found[-1][len(RESULT_MARKER):]) if found else None
    if res is not None:
        return {**res, "exit_status": proc.returncode}, text, None
    return None, text, fail(f"all-reduce failed (exit status {proc.returncode}): "
                            f"{_error_line(text)}", FAILED_HINT, {"output_tail": tail(text)})


def bandwidth_text(res: dict[str, Any]) -> str:
    """'busbw (GB/s) 1MiB: 21.40, ...', or why there is nothing to measure."""
    if res["world_size"] == 1:
        # busbw = algbw * 2(n-1)/n is 0 for n = 1: nothing crossed a link, so print no 0.00 GB/s
        between = "inter-GPU" if res["backend"] == "nccl" else "inter-process"
        return f"one rank: no {between} traffic to measure"
    return "busbw (GB/s) " + ", ".join(f"{human_bytes(r['bytes']).replace(' ', '')}: "
                                       f"{r['busbw_gbs']:.2f}" for r in res["results"])


def summarize_allreduce(res: dict[str, Any], output: str, note: str = "") -> CheckResult:
    """Turn the worker's JSON plus NCCL's log into one result."""
    transports, warnings = parse_transports(output), nccl_warnings(output)
    data = {**res, "transports": transports, "nccl_warnings": warnings[:10]}
    if res["world_size"] == 1:  # --json must not show a measured-looking 0.0 either
        data["results"] = [{**r, "busbw_gbs": None} for r in res["results"]]
    ranks = f"{res['world_size']} rank{'s' if res['world_size'] != 1 else ''}"
    where = f"{ranks} on {res['nodes']} node(s), {res['device']}"
    detail = f"{note}{res['backend']}, {where}: {bandwidth_text(res)}"
    if transports:
        detail += f"; via {', '.join(sorted(transports))}"
    if not res["correct"]:
        return fail(f"{detail}: WRONG all-reduce result", "a GPU or its interconnect corrupts data: "
                    "run nccl-tests with -c 1 and drain the node", data)
    if res["backend"] == "nccl" and res["nodes"] == 1 and "NET/Socket" in transports:
        return warn(f"{detail}: GPUs on one node talk through TCP sockets", "P2P and SHM are "
                    "off or broken: unset NCCL_P2P_DISABLE/NCCL_SHM_DISABLE, check /dev/shm and "
                    "the IOMMU (ACS) settings", data)
    if res.get("exit_status"):
        return warn(f"{detail}; but the launch exited with status {res['exit_status']}",
                    "a rank failed after the test (at shutdown): see output_tail in --json",
                    {**data, "output_tail": tail(output)})
    if warnings:
        return warn(f"{detail}; NCCL warned: {warnings[0]}", "see nccl_warnings in --json", data)
    return ok(detail, data)


@check("allreduce")
def check_allreduce(p: Probe) -> CheckResult:
    """A real all-reduce across local ranks, started as processes by torchrun."""
    if "error" in p.torch_info():
        raise Skip(f"torch not importable: {p.torch_info()['error']}")
    try:
        backend, nproc, note = plan_local(p)
    except ValueError as e:
        return fail(str(e), "pass --nproc no larger than the number of visible GPUs")
    sizes, iters = (NCCL_SIZES, NCCL_ITERS) if backend == "nccl" else (GLOO_SIZES, GLOO_ITERS)
    with tempfile.TemporaryDirectory(prefix="hpcgpu-doctor-") as tmp:
        out = Path(tmp) / "allreduce.json"
        argv = torchrun_argv(nproc, worker_argv(str(out), backend, sizes, iters))
        res, output, failure = run_launch(p, argv, out)
    return failure or summarize_allreduce(res, output, note)
