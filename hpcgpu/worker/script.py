"""Run the user's script in this rank process the way `python train.py` (and so torchrun) would.

`runpy.run_path` is close but not the same: it sets `sys.argv[0]` to the path it was given, so a
script would see an absolute path where torchrun gives it the path as typed, and the rank (started
as `python -m hpcgpu.worker`) keeps the working directory at the front of `sys.path`, where Python
puts the script's own directory.
"""

from __future__ import annotations

import os
import sys
import types


def script_sys_path(path: list[str], script_dir: str, cwd: str) -> list[str]:
    """sys.path as `python SCRIPT` has it: the script's directory first, once. The entry `-m` put
    first (the working directory, or '' for it) is replaced, not kept beside it."""
    rest = path[1:] if path and os.path.abspath(path[0] or cwd) == cwd else path
    return [script_dir, *[p for p in rest if p != script_dir]]


def run_script(typed: str, args: list[str]) -> None:
    """Execute the script as __main__: sys.argv[0] as typed, __file__ absolute (as Python 3.9+ sets
    it), the script's directory as sys.path[0]. Classes it defines pickle as __main__.X while it runs."""
    script = os.path.abspath(typed)
    with open(script, "rb") as f:
        code = compile(f.read(), script, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=script, __cached__=None, __loader__=None, __package__=None, __spec__=None)
    sys.argv = [typed, *args]
    sys.path[:] = script_sys_path(sys.path, os.path.dirname(script), os.getcwd())
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)  # shell-exception: the user's own script file, compiled, as runpy.run_path runs it
    finally:
        sys.modules["__main__"] = saved
