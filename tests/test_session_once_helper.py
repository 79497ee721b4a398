"""tests/helpers/session_once.py: one computation per session, shared through the session's temp root."""

from __future__ import annotations

import pytest

from tests.helpers.session_once import session_once


def test_the_second_asker_reads_the_first_askers_value_without_computing(tmp_path_factory):
    calls = []
    first = session_once(tmp_path_factory, "helper-test-value", lambda: calls.append(1) or [1.5, 2.5])
    second = session_once(tmp_path_factory, "helper-test-value", lambda: calls.append(2) or [9.0])
    assert first == second == [1.5, 2.5] and calls == [1]


def test_a_failed_computation_leaves_nothing_so_the_next_asker_computes(tmp_path_factory):
    def fails():
        raise AssertionError("the reference run failed")

    with pytest.raises(AssertionError, match="reference run failed"):
        session_once(tmp_path_factory, "helper-test-failure", fails)
    assert session_once(tmp_path_factory, "helper-test-failure", lambda: {"loss": 1.0}) == {"loss": 1.0}
