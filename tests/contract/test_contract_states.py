"""RunState: the one map from an exit status to a state, and which states are over / resumable.
The expected tables are written out by hand: they are the contract, not a copy of the code."""

from __future__ import annotations

import pytest

from hpcgpu.contract.states import RunState, state_from_exit


@pytest.mark.parametrize("code, state", [
    (0, RunState.DONE),
    (75, RunState.STOPPED),
    (1, RunState.FAILED),
    (2, RunState.FAILED),
    (130, RunState.INTERRUPTED),  # Ctrl-C before a checkpoint: a person's stop, not a failure
    (-9, RunState.FAILED),
    (74, RunState.FAILED),
    (76, RunState.HUNG),  # the watchdog found no progress for watchdog.stall_s
    (77, RunState.FAILED),
    (128 + 15, RunState.INTERRUPTED),  # SIGTERM
    (128 + 1, RunState.INTERRUPTED),  # SIGHUP
    (128 + 10, RunState.INTERRUPTED),  # SIGUSR1
    (128 + 12, RunState.INTERRUPTED),  # SIGUSR2: Slurm's warning
    (128 + 9, RunState.FAILED),  # SIGKILL is a kill, not a stop request
    (128 + 6, RunState.FAILED),  # SIGABRT
    (128 + 11, RunState.FAILED),  # SIGSEGV
])
def test_state_from_exit(code, state):
    assert state_from_exit(code) is state


#: state -> (ended, resumable)
TABLE = {
    RunState.PENDING: (False, False),
    RunState.RUNNING: (False, False),
    RunState.DONE: (True, False),
    RunState.STOPPED: (True, True),
    RunState.FAILED: (True, True),
    RunState.INTERRUPTED: (True, True),
    RunState.HUNG: (True, True),
    RunState.LOST: (True, True),
    RunState.CANCELLED: (True, True),
    RunState.TIMEOUT: (True, True),
    RunState.PREEMPTED: (True, True),
    RunState.NODE_FAIL: (True, True),
    RunState.OUT_OF_MEMORY: (True, True),
    RunState.HELD: (False, False),
    RunState.UNKNOWN: (False, True),
}


def test_the_table_covers_every_state():
    assert set(TABLE) == set(RunState)


@pytest.mark.parametrize("state", list(RunState), ids=str)
def test_ended_and_resumable(state):
    assert (state.ended, state.resumable) == TABLE[state]


def test_states_print_as_their_value():
    assert str(RunState.OUT_OF_MEMORY) == "OUT_OF_MEMORY" and f"{RunState.HELD}" == "HELD"
    assert RunState("STOPPED") is RunState.STOPPED


@pytest.mark.parametrize("failed_codes, stopped", [
    ([75], True),
    ([75, 75, 75, 75], True),  # every rank checkpointed on the stop
    ([75, 1], False),  # one rank crashed while the others saved: a failure to report
    ([1, 75], False),
    ([75, -9], False),  # one rank was killed (torch elastic reports -signal)
    ([75, -15], False),  # a rank that died of SIGTERM did not checkpoint
    ([75, 143], False),
    ([1], False),
    ([], False),  # nothing failed: nothing stopped either (a clean finish is not a stop)
])
def test_ranks_stopped_cleanly_only_when_every_failed_rank_said_75(failed_codes, stopped):
    from hpcgpu.contract.exitcodes import ranks_stopped_cleanly

    assert ranks_stopped_cleanly(iter(failed_codes)) is stopped
