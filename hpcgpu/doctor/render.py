"""Three views of the same results: a terminal table, JSON for machines, markdown for an issue."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from hpcgpu.doctor.result import FAIL, OK, SKIP, WARN, CheckResult, exit_status, summarize

LABELS = {OK: "ok", WARN: "WARN", FAIL: "FAIL", SKIP: "skip"}
COLORS = {OK: "green", WARN: "yellow", FAIL: "red", SKIP: "bright_black"}


def summary_line(results: list[CheckResult]) -> str:
    """'12 ok, 2 warn, 1 fail, 5 skip'."""
    return ", ".join(f"{n} {s}" for s, n in summarize(results).items())


def _style(text: str, status: str, color: bool) -> str:
    if not color:
        return text
    import click

    return click.style(text, fg=COLORS[status], bold=status == FAIL)


def render_table(results: list[CheckResult], width: int = 100, color: bool = False) -> str:
    """Name, status and detail per check; the hint under each warning or failure."""
    name_w = max([len(r.name) for r in results] + [5])
    indent = " " * (name_w + 10)  # under DETAIL: name, 2 spaces, 6-wide status, 2 spaces
    detail_w = max(width - len(indent), 30)
    lines = [f"{'CHECK':<{name_w}}  STATUS  DETAIL"]
    for r in results:
        detail = textwrap.wrap(r.detail, detail_w) or [""]
        label = _style(f"{LABELS[r.status]:<6}", r.status, color)
        lines.append(f"{r.name:<{name_w}}  {label}  {detail[0]}")
        lines += [indent + more for more in detail[1:]]
        if r.hint and r.status in (WARN, FAIL):
            hint = textwrap.wrap(r.hint, detail_w - 2)
            lines.append(f"{indent}-> {hint[0]}")
            lines += [f"{indent}   {more}" for more in hint[1:]]
    verdict = "FAILED" if exit_status(results) else "passed"
    lines += ["", f"doctor {verdict}: {summary_line(results)}"]
    return "\n".join(lines) + "\n"


def as_data(results: list[CheckResult], version: str) -> dict[str, Any]:
    """The facts as plain data (what --json prints)."""
    return {"hpcgpu": version, "ok": exit_status(results) == 0, "summary": summarize(results),
            "checks": [r.as_dict() for r in results]}


def render_json(results: list[CheckResult], version: str) -> str:
    """Indented, key-sorted JSON with a trailing newline."""
    return json.dumps(as_data(results, version), indent=2, default=str) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_report(results: list[CheckResult], version: str) -> str:
    """A markdown block to paste into a GitHub issue: table, hints, and the JSON folded away."""
    lines = [f"### `hpcgpu doctor` report (hpcgpu {version})", "",
             f"**{summary_line(results)}**", "", "| check | status | detail |", "|---|---|---|"]
    lines += [f"| {_cell(r.name)} | {LABELS[r.status]} | {_cell(r.detail)} |" for r in results]
    hinted = [r for r in results if r.hint and r.status in (WARN, FAIL)]
    if hinted:
        lines += ["", "**Hints**", ""]
        lines += [f"- **{r.name}** ({LABELS[r.status]}): {_cell(r.hint)}" for r in hinted]
    lines += ["", "<details><summary>JSON</summary>", "", "```json",
              render_json(results, version).rstrip(), "```", "", "</details>"]
    return "\n".join(lines) + "\n"
