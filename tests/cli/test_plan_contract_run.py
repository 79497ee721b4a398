"""The plan that is printed is the plan that runs: `--dry-run --json` equals the plan.json a real
run writes (apart from run id and time), and the ranks see exactly the planned device, with
neither pydantic nor the host layer loaded."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers.session_once import session_once
from tests.helpers.user_script_run import user_script_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user_script(tmp_path_factory) -> dict:
    # `run local --nproc 2 -- train.py --lr 3` of a script recording what each rank saw, and its dry run:
    # the same launch as tests/cli/test_run_local.py's user-script test reads, made once per session
    return session_once(tmp_path_factory, "user-script-run",
                        lambda: user_script_run(tmp_path_factory.mktemp("user-script")))


def without_identity(text: str) -> str:
    """plan.json's bytes with its run id and creation time taken out."""
    plan = json.loads(text)
    return re.sub(r'"created": [0-9.e+]+', '"created": 0', text).replace(plan["run_id"], "RUN-ID")


def test_the_dry_run_json_is_the_plan_that_runs_and_ranks_get_their_planned_device(user_script):
    dry = user_script["dry"]
    assert dry["rc"] == 0, dry["stderr"]
    planned = json.loads(dry["stdout"])
    assert [(r["device"], r["backend"]) for r in planned["ranks"]] == [("cpu", "gloo"), ("cpu", "gloo")]
    assert not user_script["runs_after_dry_run"]  # a dry run creates nothing

    out = user_script["run"]
    assert out["rc"] == 0, out["stdout"] + out["stderr"]
    assert len(user_script["run_dirs"]) == 1, user_script["run_dirs"]
    # the same bytes, apart from the run id and the time
    assert without_identity(user_script["plan"]) == without_identity(dry["stdout"])
    assert user_script["plan_mode"] == "0o600"
    assert len(user_script["envs"]) == 2 and None not in user_script["envs"], user_script["envs"]  # both ranks
    for seen in user_script["envs"]:
        seen = {k: seen[k] for k in ("device", "dist_device", "backend", "loaded")}
        assert seen == {"device": "cpu", "dist_device": "cpu", "backend": "gloo", "loaded": []}, seen
