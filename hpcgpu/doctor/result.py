"""CheckResult, the four statuses, and the guard that turns a check's Skip or crash into a result."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)
BUG_HINT = "this is a bug in hpcgpu doctor: please report it with the output of `hpcgpu doctor --report`"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: what was found (detail) and, when not ok, how to fix it (hint)."""

    name: str
    status: str
    detail: str
    hint: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "hint": self.hint, "data": self.data}


class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason shown to the user."""


class Fail(Exception):
    """Raised from deep inside a check (e.g. NVML cannot open a GPU): becomes a `fail` with a hint."""

    def __init__(self, detail: str, hint: str):
        super().__init__(detail)
        self.hint = hint


def ok(detail: str, data: dict[str, Any] | None = None) -> CheckResult:
    """An ok result; the @check wrapper fills in the name."""
    return CheckResult("", OK, detail, "", data or {})


def warn(detail: str, hint: str, data: dict[str, Any] | None = None) -> CheckResult:
    """A warning: training may work but slower or fragile."""
    return CheckResult("", WARN, detail, hint, data or {})


def fail(detail: str, hint: str, data: dict[str, Any] | None = None) -> CheckResult:
    """A failure: multi-GPU training will break (or is broken) as things stand."""
    return CheckResult("", FAIL, detail, hint, data or {})


def skip(detail: str, data: dict[str, Any] | None = None) -> CheckResult:
    """Not applicable here; detail says why."""
    return CheckResult("", SKIP, detail, "", data or {})


Check = Callable[..., CheckResult]


def check(name: str) -> Callable[[Check], Check]:
    """Name a check; a Skip it raises becomes `skip` and any other exception a `fail`, never a crash."""

    def decorate(fn: Check) -> Check:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> CheckResult:
            try:
                result = fn(*args, **kwargs)
            except Skip as e:
                return CheckResult(name, SKIP, str(e))
            except Fail as e:
                return CheckResult(name, FAIL, str(e), e.hint)
            except Exception as e:  # noqa: BLE001 - doctor must report, not crash
                return CheckResult(name, FAIL, f"check crashed: {type(e).__name__}: {e}", BUG_HINT)
            return replace(result, name=name)

        guarded.check_name = name  # type: ignore[attr-defined]
        return guarded

    return decorate


def summarize(results: list[CheckResult]) -> dict[str, int]:
    """Count results per status, in the fixed order ok, warn, fail, skip."""
    return {s: sum(r.status == s for r in results) for s in STATUSES}


def exit_status(results: list[CheckResult]) -> int:
    """0 when nothing failed, 1 otherwise."""
    return 1 if any(r.status == FAIL for r in results) else 0


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units as `df -h` prints them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
