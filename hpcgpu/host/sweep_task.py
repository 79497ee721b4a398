"""One task of a local sweep, as its own launcher: `python -m hpcgpu.host.sweep_task SWEEP_DIR INDEX`.

Started by hpcgpu.backends.local.sweep_queue. A task that never ran starts as a new run with the
run id and run dir sweep.json gives it (the base spec plus its overrides); one that ran before
(stopped, failed) resumes in its run dir from its newest checkpoint, as `run local --resume`
would. Exits with the node agent's status. Torch is imported only by the agent, as in `run local`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hpcgpu.contract import exitcodes
from hpcgpu.contract.errors import UserError


def launch_task(sweep_dir: str, index: int) -> int:
    from hpcgpu.host import launch
    from hpcgpu.host.spec import apply_overrides, load_spec
    from hpcgpu.host.sweep_launch import task_run_spec
    from hpcgpu.host.sweep_record import load_sweep

    record = load_sweep(sweep_dir)
    task = record.task(index)
    if record.cwd and os.path.isdir(record.cwd):
        os.chdir(record.cwd)  # relative script and data paths mean what they meant at the sweep's start
    if (Path(task["run_dir"]) / "run.json").exists():
        launched = launch.resume(task["run_dir"], "local")
    else:
        base, _ = load_spec(Path(sweep_dir) / "spec.yaml")
        spec = task_run_spec(apply_overrides(base, dict(task["overrides"])), sweep_dir)
        name = launch.RunName(task["run_id"], os.path.basename(task["run_dir"]))
        launched = launch.start(spec, "local", name=name)
    return int(launched.handle.exit_code)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m hpcgpu.host.sweep_task SWEEP_DIR INDEX", file=sys.stderr)
        return exitcodes.USAGE
    try:
        return launch_task(argv[0], int(argv[1]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return exitcodes.USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
