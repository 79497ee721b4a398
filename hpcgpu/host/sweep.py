"""Sweeps: one spec, many runs. Expanding `--sweep` options and the spec's `sweep:` section into
tasks, checking every task's spec before anything starts, and naming tasks. Pure and torch-free.

A task is one run with its own run dir, checkpoints and rendezvous: the base spec (without its
`sweep:` section) plus the task's overrides. Task i of a grid is the i-th combination in
itertools.product order of the keys as given (the first key varies slowest), after each explicit
override set: `sets x grid`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import Spec, apply_overrides, parse_set_options

#: the most tasks one sweep may have: far above a real grid, far below what floods a scheduler
MAX_TASKS = 1000
#: keys a task may not change: they name the sweep's own directories, or are the sweep itself
FIXED_KEYS = ("name", "logging.dir", "sweep")
#: longest task label in a directory name (the label is for people; the index keeps it unique)
MAX_LABEL = 80


@dataclass(frozen=True)
class SweepTask:
    """One run of a sweep: its index and the overrides that make its spec."""

    index: int
    overrides: Mapping[str, Any]

    def label(self) -> str:
        """`lr=0.001,seed=1`: the overrides by their last key part (the full key where two share it)."""
        return task_label(self.overrides)

    def dir_name(self) -> str:
        """`t3-lr=0.001,seed=1`: the task's run dir under the sweep dir, so TensorBoard names each
        curve by its overrides (`tensorboard --logdir <sweep dir>`)."""
        safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", self.label())[:MAX_LABEL]
        return f"t{self.index}" + (f"-{safe}" if safe else "")


def task_label(overrides: Mapping[str, Any]) -> str:
    lasts = [k.rsplit(".", 1)[-1] for k in overrides]
    names = [last if lasts.count(last) == 1 else key for key, last in zip(overrides, lasts)]
    return ",".join(f"{name}={format_value(v)}" for name, v in zip(names, overrides.values()))


def format_value(value: Any) -> str:
    """A value as the user would type it back (`0.001`, `true`, `[a, b]`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return "null" if value is None else str(value)


def parse_sweep_options(items: Sequence[str]) -> dict[str, list[Any]]:
    """`--sweep train.lr=1e-3,3e-4 --sweep train.seed=1,2` -> {"train.lr": [0.001, 0.0003], ...}.

    Values are split on commas and each read as a YAML scalar, as --set reads its value; a value
    in brackets is one YAML flow list of values (`--sweep 'entry.args=[[--x, 1], [--x, 2]]'`).
    Raises UserError naming the item for a malformed one or a key given twice."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not text.strip():
            raise UserError(f"--sweep {item!r}: expected KEY=V1,V2,... with a dotted spec key, "
                            "e.g. --sweep train.lr=1e-3,3e-4", hint="the keys are listed in docs/spec.md")
        if key in grid:
            raise UserError(f"--sweep {key} is given twice", hint=f"give every value once: --sweep {key}=A,B,C")
        text = text.strip()
        if text.startswith("["):  # a YAML flow list: parsed as a whole, so it is a list or an error
            values = parse_set_options([f"{key}={text}"])[key]
        else:
            parts = text.split(",")
            if any(not p.strip() for p in parts):
                raise UserError(f"--sweep {key}: {text!r} has an empty value", hint="separate values by single commas")
            values = [parse_set_options([f"{key}={p.strip()}"])[key] for p in parts]
        grid[key] = values
    return grid


def expand(grid: Mapping[str, Sequence[Any]], sets: Sequence[Mapping[str, Any]] = ()) -> list[SweepTask]:
    """The tasks: every explicit override set (or one empty set) combined with every grid
    combination. Raises UserError for an empty value list, a fixed key, or too many tasks."""
    for key, values in grid.items():
        check_key(key, "sweep.grid")
        if not isinstance(values, (list, tuple)) or not values:
            raise UserError(f"sweep.grid.{key}: give a non-empty list of values, e.g. [1e-3, 3e-4]")
    for n, overrides in enumerate(sets):
        for key in overrides:
            check_key(key, f"sweep.sets[{n}]")
    count = max(1, len(sets)) * _product_size(grid)
    if count > MAX_TASKS:
        raise UserError(f"the sweep has {count} tasks, more than {MAX_TASKS}",
                        hint="sweep fewer values, or split it into several sweeps")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    tasks = [{**dict(s), **combo} for s in (sets or [{}]) for combo in combos]
    return [SweepTask(i, t) for i, t in enumerate(tasks)]


def _product_size(grid: Mapping[str, Sequence[Any]]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def check_key(key: str, where: str) -> None:
    """A sweep key must be a dotted spec key other than the FIXED_KEYS."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise UserError(f"{where}: {key!r} is not a dotted spec key (e.g. train.lr)")
    if any(key == k or key.startswith(k + ".") for k in FIXED_KEYS):
        raise UserError(f"{where}: {key} cannot vary between the tasks of a sweep",
                        hint="every task has its own run dir inside the sweep's directory, named by its overrides")


def task_specs(base: Spec, tasks: Sequence[SweepTask]) -> list[Spec]:
    """Every task's validated spec. Raises UserError for the first task whose spec is invalid,
    naming its index, its overrides and the bad key, so nothing is started or submitted."""
    specs = []
    for task in tasks:
        try:
            specs.append(apply_overrides(base, dict(task.overrides)))
        except UserError as e:
            detail = str(e.message).replace("command-line options: ", "")
            raise UserError(f"sweep task {task.index} ({task.label()}) is invalid: {detail}",
                            hint="fix or drop that value; nothing was started") from None
    return specs


def merge_grid(spec_grid: Mapping[str, Sequence[Any]], flag_grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """The spec's sweep.grid with --sweep keys replacing (or adding to) it, in the spec's order."""
    return {**{k: list(v) for k, v in spec_grid.items()}, **{k: list(v) for k, v in flag_grid.items()}}


def ranked(rows: Sequence[dict], metric: str, goal: str) -> list[dict]:
    """Rows best first by row['metrics'][metric] (goal 'min' or 'max'); rows without it last, by index."""
    def key(row: dict) -> tuple:
        value = (row.get("metrics") or {}).get(metric)
        if not isinstance(value, (int, float)) or value != value:  # missing or nan: last
            return (1, 0.0, row["index"])
        return (0, value if goal == "min" else -value, row["index"])
    return sorted(rows, key=key)
