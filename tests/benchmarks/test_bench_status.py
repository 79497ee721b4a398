"""How `python -m benchmarks` reports a tier that did not produce figures."""

from benchmarks.__main__ import _status_detail
from benchmarks.harness import TierResult


def test_an_error_is_printed_whole_not_just_its_last_line():
    # torchrun ends its failure report with a rule; the line before it is the one that explains
    note = "Traceback (most recent call last):\nRuntimeError: ddp_loop.py exited 1\nterminate called\n" + "=" * 20
    detail = _status_detail(TierResult(3, "t", status="error", note=note))
    assert detail.splitlines()[1:] == ["    | " + line for line in note.splitlines()]


def test_a_skip_gives_its_reason_on_the_same_line_and_ok_gives_nothing():
    assert _status_detail(TierResult(9, "t", status="skipped", note="a\nno CUDA device here")) == "no CUDA device here"
    assert _status_detail(TierResult(1, "t", note="details go to RESULTS.md")) == ""
