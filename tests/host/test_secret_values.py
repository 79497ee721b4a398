"""Secrets by value, not only by name: credentials in a URL and names the user marks secret
(`secret_env:`, HPCGPU_SECRET_ENV) are redacted in every file and printed report like secret names,
and still reach the ranks: withheld on the first launch, from the environment on a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcgpu import backends
from hpcgpu.agent.node import rank_environment
from hpcgpu.backends import LaunchHandle
from hpcgpu.cli import main
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import REDACTED, load_plan
from hpcgpu.host import launch
from hpcgpu.host.envvars import EnvDefault, merge_under
from hpcgpu.host.secrets import (MIN_SCRUBBED_LENGTH, SECRET_ENV_VARIABLE, has_url_credentials, is_secret,
                                 marked_names, redact, scrub, withheld)
from hpcgpu.host.spec import ENV_OVERRIDES, apply_overrides, env_overrides, parse_spec
from tests.helpers.dummy_backend import DummyBackend

PASSWORD = "hunter2-pw-5e1f"
DB_URL = f"postgres://app:{PASSWORD}@db.example:5432/app"
MARKED = "plain-but-private-9c2d"
SPEC = f"""name: sv
resources: {{gpus_per_node: 0, procs_per_node: 1}}
env: {{DATABASE_URL: "{DB_URL}", SITE_ID: {MARKED}, PLAIN: visible, RDZV: "tcp://10.0.0.1:29500"}}
secret_env: [SITE_ID]
"""

# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize("value", [
    DB_URL,
    "postgresql+psycopg2://u:p@h/db",  # SQLAlchemy: '+' in the scheme
    "redis://:only-a-password@cache:6379/0",  # password, no user
    "https://ghp_abc123@github.com/org/repo.git",  # a token in the user part, no ':'
    "mongodb+srv://u:p@cluster0.example.net/?retryWrites=true",
    "jdbc:postgresql://u:p@h:5432/db",  # the URL inside a JDBC string
    "http://proxy.example:3128,http://u:p@proxy2.example:3128",  # the second of a list
    "amqp://guest:guest@rabbit",
])
def test_a_url_with_a_user_part_is_a_credential(value):
    assert has_url_credentials(value) and is_secret("SOME_SETTING", value)


@pytest.mark.parametrize("value", [
    "tcp://10.0.0.1:29500", "env://", "https://huggingface.co", "user@host", "git@github.com:org/repo.git",
    "mailto:ada@example.com", "https://example.com/@ada", "https://example.com/?who=a@b", "file:///tmp/a@b",
    "s3://bucket/key@v2", "http://@host", "ada@example.com", "", "INFO",
])
def test_ordinary_values_are_not_credentials(value):
    assert not has_url_credentials(value) and not is_secret("SOME_SETTING", value)


def test_a_marked_name_is_secret_in_any_case():
    assert is_secret("SITE_ID", "x", ["SITE_ID"]) and is_secret("site_id", "x", ["SITE_ID"])
    assert is_secret("SITE_ID", "x", ["site_id"]) and not is_secret("SITE_ID", "x", ["SITE"])


def test_the_marking_variable_itself_is_not_a_secret():
    # its name has SECRET as a part, but it holds names: redacting it would hide what was redacted
    assert not is_secret(SECRET_ENV_VARIABLE, "SITE_ID,OTHER")


def test_redact_and_withheld_apply_every_part_of_the_rule():
    env = {"HF_TOKEN": "t", "DATABASE_URL": DB_URL, "SITE_ID": MARKED, "PLAIN": "visible",
           "OLD_URL": REDACTED}
    assert redact(env, ["SITE_ID"]) == {"HF_TOKEN": REDACTED, "DATABASE_URL": REDACTED, "SITE_ID": REDACTED,
                                        "PLAIN": "visible", "OLD_URL": REDACTED}
    # a value already REDACTED (a resumed run's spec.yaml) is not a value to pass on
    assert withheld(env, ["SITE_ID", "OLD_URL"]) == {"HF_TOKEN": "t", "DATABASE_URL": DB_URL, "SITE_ID": MARKED}


@pytest.mark.parametrize("raw, names", [("A,B", ("A", "B")), (" A , ,B ", ("A", "B")), ("", ())])
def test_marked_names_are_read_from_the_variable(raw, names):
    assert marked_names({SECRET_ENV_VARIABLE: raw}) == names
    assert marked_names({}) == ()


def test_scrub_replaces_secret_values_anywhere_longest_first():
    env = {"DATABASE_URL": DB_URL, "MY_TOKEN": "abcdefgh", "SHORT_KEY": "x" * (MIN_SCRUBBED_LENGTH - 1),
           "SITE_ID": MARKED, "PLAIN": "visible-value"}
    data = {"detail": f"could not reach {DB_URL}; token abcdefgh", "list": [f"id {MARKED}", 3, None],
            "plain": "visible-value xxxxxxx"}
    assert scrub(data, env, ["SITE_ID"]) == {
        "detail": f"could not reach {REDACTED}; token {REDACTED}", "list": [f"id {REDACTED}", 3, None],
        "plain": "visible-value xxxxxxx"}  # too short to search for: "1" or "true" would garble everything


def test_notes_never_show_a_url_credential_or_a_marked_value():
    defaults = [EnvDefault("NCCL_DEBUG_FILE", "d", "why", "https://n"), EnvDefault("OMP_NUM_THREADS", "1", "why", "https://o")]
    merged = merge_under(defaults, {"NCCL_DEBUG_FILE": DB_URL}, {"OMP_NUM_THREADS": "64"}, ["OMP_NUM_THREADS"])
    text = "\n".join(merged.notes)
    assert PASSWORD not in text and "64" not in text
    assert f"NCCL_DEBUG_FILE={REDACTED} from the spec's env" in text
    assert f"OMP_NUM_THREADS: keeping your value {REDACTED}" in text

# ---------------------------------------------------------------- the spec field and its variable


def test_secret_env_names_are_validated_naming_the_key():
    with pytest.raises(UserError, match=r"secret_env \(line 2\): environment variable name 'NOT-A-NAME'"):
        parse_spec("name: x\nsecret_env: [GOOD, NOT-A-NAME]\n")


def test_the_variable_adds_names_and_never_removes_the_specs():
    spec = parse_spec("secret_env: [SITE_ID]\n")
    got = apply_overrides(spec, env_overrides({SECRET_ENV_VARIABLE: "OTHER, SITE_ID"}))
    assert got.secret_env == ["SITE_ID", "OTHER"]


def test_a_bad_name_in_the_variable_is_refused_naming_it():
    with pytest.raises(UserError) as info:
        apply_overrides(parse_spec(""), env_overrides({SECRET_ENV_VARIABLE: "bad-name"}))
    assert SECRET_ENV_VARIABLE in info.value.message and "'bad-name' is not valid" in info.value.message

# ---------------------------------------------------------------- every file and report of a run


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The dummy backend registered, HPCGPU_HOME in tmp, no HPCGPU_* overrides, cwd = tmp_path/work."""
    monkeypatch.setitem(backends.REGISTRY, "dummy", "tests.helpers.dummy_backend:DummyBackend")
    monkeypatch.setitem(backends.NODE_HALVES, "dummy", "tests.helpers.dummy_backend")
    monkeypatch.setattr(DummyBackend, "launched", [])
    for name in (*ENV_OVERRIDES, SECRET_ENV_VARIABLE, "DATABASE_URL", "SITE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HPCGPU_HOME", str(tmp_path / "state"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def leaks(root: Path) -> list[str]:
    """Files under root holding a byte of either secret value."""
    return [str(p) for p in root.rglob("*") if p.is_file()
            and (PASSWORD.encode() in p.read_bytes() or MARKED.encode() in p.read_bytes())]


def hpcgpu(capsys, *argv: str) -> tuple[int, str]:
    """The real command line, in process: its exit status and everything it printed."""
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


def assert_clean(text: str) -> None:
    assert PASSWORD not in text and MARKED not in text, text


def test_url_credentials_and_marked_values_reach_the_backend_and_no_file(home, monkeypatch):
    seen = {}

    def launch_(self, plan, withheld):
        seen.update(withheld)
        return LaunchHandle(run_id=plan.run_id, exit_code=0)

    monkeypatch.setattr(DummyBackend, "launch", launch_)
    plan = launch.start(parse_spec(SPEC), "dummy").plan
    assert seen == {"DATABASE_URL": DB_URL, "SITE_ID": MARKED}
    assert leaks(home) == []  # plan.json, spec.yaml, run.json, the index
    written = json.loads((Path(plan.run_dir) / "plan.json").read_text())
    assert written["env"]["DATABASE_URL"] == written["spec"]["env"]["DATABASE_URL"] == REDACTED
    assert written["env"]["SITE_ID"] == written["spec"]["env"]["SITE_ID"] == REDACTED
    assert written["env"]["PLAIN"] == "visible" and written["env"]["RDZV"] == "tcp://10.0.0.1:29500"
    assert written["spec"]["secret_env"] == ["SITE_ID"]
    # the node agent puts the real values in the ranks' environment
    ranks = rank_environment(load_plan(plan.run_dir), {}, seen)
    assert ranks["DATABASE_URL"] == DB_URL and ranks["SITE_ID"] == MARKED


def test_a_resume_takes_the_values_from_the_environment(home):
    first = launch.start(parse_spec(SPEC), "dummy").plan
    _, plan = launch.resume_plan(first.run_id, "dummy")
    assert plan.env["DATABASE_URL"] == plan.env["SITE_ID"] == REDACTED
    with pytest.raises(UserError, match="export DATABASE_URL"):
        rank_environment(plan, {}, {})
    ranks = rank_environment(plan, {"DATABASE_URL": DB_URL, "SITE_ID": MARKED}, {})
    assert ranks["DATABASE_URL"] == DB_URL and ranks["SITE_ID"] == MARKED
    launch.resume(first.run_id, "dummy")  # rewrites plan.json: still nothing written
    assert leaks(home) == []


def test_a_database_url_with_a_password_is_redacted_in_the_dry_run(home, capsys):
    Path("hpcgpu.yaml").write_text(f"name: sv\nresources: {{gpus_per_node: 0, procs_per_node: 1}}\n"
                                   f"env: {{DATABASE_URL: '{DB_URL}'}}\n")
    for flags in ([], ["--json"]):
        code, out = hpcgpu(capsys, "run", "local", "--dry-run", *flags)
        assert code == 0, out
        assert PASSWORD not in out and REDACTED in out


def test_dry_runs_and_spec_show_redact_marked_and_url_values(home, capsys):
    Path("hpcgpu.yaml").write_text(SPEC)
    for argv in (["run", "local", "--dry-run"], ["run", "local", "--dry-run", "--json"], ["spec", "show"]):
        code, out = hpcgpu(capsys, *argv)
        assert code == 0, out
        assert_clean(out)
        assert "visible" in out and REDACTED in out
    _, text = hpcgpu(capsys, "run", "local", "--dry-run")
    assert f"DATABASE_URL={REDACTED}" in text and f"SITE_ID={REDACTED}" in text


def test_a_name_marked_by_the_variable_is_redacted_too(home, capsys, monkeypatch):
    Path("hpcgpu.yaml").write_text(f"env: {{SITE_ID: {MARKED}, PLAIN: visible}}\n")
    monkeypatch.setenv(SECRET_ENV_VARIABLE, "SITE_ID")
    code, out = hpcgpu(capsys, "spec", "show")
    assert code == 0 and MARKED not in out and f"SITE_ID: {REDACTED}" in out


@pytest.mark.parametrize("spec_text, env, key", [
    ("secret_env: [ok, 'no way']\n", {}, "secret_env"),
    ("env: {A: b}\n", {SECRET_ENV_VARIABLE: "A,$B"}, SECRET_ENV_VARIABLE),
])
def test_a_bad_marked_name_exits_2_naming_it_and_creates_nothing(home, capsys, monkeypatch, spec_text, env, key):
    Path("hpcgpu.yaml").write_text(spec_text)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out = hpcgpu(capsys, "run", "local")
    assert code == 2 and key in out and "is not valid" in out, out
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["hpcgpu.yaml"] and not (home / "state").exists()
