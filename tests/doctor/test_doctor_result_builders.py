"""The result builders (ok, warn, fail, skip) of hpcgpu/doctor/result.py: unnamed results that the
@check wrapper names, the status check's message, and human_bytes at its edges."""

import pytest

from hpcgpu.doctor.result import CheckResult, check, fail, human_bytes, ok, skip, warn


def test_each_builder_makes_an_unnamed_result_with_its_status_detail_hint_and_data():
    assert ok("fine", {"n": 1}) == CheckResult("", "ok", "fine", "", {"n": 1})
    assert warn("slow", "raise it", {"n": 2}) == CheckResult("", "warn", "slow", "raise it", {"n": 2})
    assert fail("broken", "fix it", {"n": 3}) == CheckResult("", "fail", "broken", "fix it", {"n": 3})
    assert skip("no GPU here", {"n": 4}) == CheckResult("", "skip", "no GPU here", "", {"n": 4})


def test_without_data_each_builder_gives_an_empty_dict():
    for result in (ok("a"), warn("b", "h"), fail("c", "h"), skip("d")):
        assert result.data == {} and result.name == ""
    assert skip("d").hint == ""


def test_a_skip_returned_by_a_check_is_named_by_it():
    @check("nccl")
    def nccl(_):
        return skip("torch has no NCCL backend and there is no GPU")

    assert nccl(None) == CheckResult("nccl", "skip", "torch has no NCCL backend and there is no GPU")
    assert nccl.check_name == "nccl"


def test_a_bad_status_is_refused_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError) as info:
        CheckResult("x", "bad", "")
    assert "'bad'" in str(info.value) and "'ok', 'warn', 'fail', 'skip'" in str(info.value)


def test_bytes_are_whole_numbers():
    assert human_bytes(700.25) == "700 B"


def test_beyond_tib_the_unit_stays_tib():
    assert human_bytes(2048 << 40) == "2048 TiB"
    assert human_bytes(1.5 * (1 << 50)) == "1536 TiB"
