"""One run's facts for `status` and a sweep's task lines: state from its backend, nodes, restarts,
the last checkpoint, the last hang. Torch-free."""

from __future__ import annotations

from pathlib import Path


def _checkpoint_dir(run_dir: Path) -> Path:
    """The plan's checkpoint directory (absolute), else <run dir>/checkpoints."""
    from hpcgpu.contract.runfiles import read_json

    plan = read_json(run_dir / "plan.json") or {}
    return Path(plan.get("ckpt_dir") or run_dir / "checkpoints")


def _latest_checkpoint_step(run_dir: Path):
    """The newest committed checkpoint's step (ones being written are hidden .step_* directories)."""
    from hpcgpu.contract.checkpoints import list_checkpoints

    found = list_checkpoints(_checkpoint_dir(run_dir))
    return found[0][0] if found else None


def run_state(record) -> dict:
    """Facts about a run for `status`: state from its backend, nodes, restarts, last checkpoint."""
    from hpcgpu.backends import get_backend
    from hpcgpu.contract.runfiles import last_hang, load_excluded, read_json

    run_dir = Path(record.run_dir)
    info = read_json(run_dir / "run.json") or {}
    state, reason, nodes, restarts = "", "", info.get("nodelist") or record.nodes, int(info.get("restarts") or 0)
    try:
        status = get_backend(record.backend).status(record)
        state, reason = str(status.state), status.reason
        nodes, restarts = status.nodes or nodes, max(restarts, status.restarts)
    except Exception as e:  # an unreachable scheduler must not hide the rest
        state = f"UNKNOWN ({e})"
    return {
        "id": record.id, "backend": record.backend, "state": state, "reason": reason or None,
        "job_id": record.job_id, "nodes": nodes, "restarts": restarts,
        "last_checkpoint_step": _latest_checkpoint_step(run_dir), "last_hang": last_hang(run_dir),
        "excluded_nodes": ",".join(load_excluded(run_dir)["nodes"]) or None,
        "run_dir": record.run_dir,
    }
