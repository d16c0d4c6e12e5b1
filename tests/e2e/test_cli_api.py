"""The `validibot` CLI in API mode (DESIGN §14) on the whole local stack: `login` saves a key, and `submit`, `runs`,
`cancel`, `rerun` and `workflows` then go through REST API v1, with the documented exit codes and one JSON document
per command under --json. The admin commands (`users`, `keys`) work on Firestore directly."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.stack import LocalStack
from schemas.enums import Role
from tests.support import (
    EXAMPLES,
    ISSUED_SECRETS,
    VALIDIBOT,
    Api,
    cli,
    cli_api,
    cli_api_env,
    new_key,
    web_session,
)

pytestmark = pytest.mark.e2e

MODEL = EXAMPLES / "small-office.idf"


@dataclass(frozen=True)
class SignedIn:
    """The CLI after `validibot login` with its own config file: `run("submit", ...)` runs a command in API mode."""

    stack: LocalStack
    config: Path

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli_api(self.stack, self.config, *args)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The command started, for a test to act while it runs (its output lines read as they come)."""
        return subprocess.Popen(
            [str(VALIDIBOT), *args],
            env=cli_api_env(self.stack, self.config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C as a terminal delivers it, even when the tests run in a background job that ignores SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def signed_in(stack: LocalStack, config: Path, role: Role = Role.EXECUTOR) -> SignedIn:
    """`validibot login` with a new key of the demo org, saved in `config`."""
    key = new_key(stack, "demo", role)
    login = cli_api(stack, config, "login", "--server", stack.web_url, env={"VALIDIBOT_API_KEY": key})
    assert login.returncode == 0, login.stdout + login.stderr
    return SignedIn(stack, config)


@pytest.fixture
def api_cli(full_stack: LocalStack, tmp_path: Path) -> SignedIn:
    return signed_in(full_stack, tmp_path / "cli.json")


def ok(result: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def document(result: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    """The one JSON document a --json command printed."""
    return json.loads(ok(result, code).stdout)


def cancel_when_cancelable(run: SignedIn, run_id: str, timeout: float = 60) -> dict[str, Any]:
    """`cancel --json`, once the run has an attempt to cancel (the API answers 409 until it has)."""
    deadline = time.monotonic() + timeout
    while True:
        result = run("cancel", run_id, "--json")
        if result.returncode == 0 or time.monotonic() > deadline or "cannot be canceled yet" not in result.stderr:
            return document(result)
        time.sleep(0.2)


def test_login_saves_the_key_for_its_owner_alone_and_never_prints_it(full_stack: LocalStack, tmp_path: Path) -> None:
    config = tmp_path / "cli.json"
    key = new_key(full_stack, "demo", Role.EXECUTOR)

    login = cli_api(full_stack, config, "login", "--server", full_stack.web_url + "/", env={"VALIDIBOT_API_KEY": key})

    ok(login)
    assert re.fullmatch(
        rf"signed in to {re.escape(full_stack.web_url)} as org demo \(role executor, key [0-9a-f]+\)\n", login.stdout
    )
    assert key not in login.stdout + login.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads(config.read_text()) == {"server": full_stack.web_url, "key": key, "org": "demo"}
    listed = document(cli_api(full_stack, config, "workflows", "list", "--json"))
    assert "json-basic" in {workflow["slug"] for workflow in listed["items"]}

    logout = ok(cli_api(full_stack, config, "logout"))
    assert not config.exists()
    assert "signed out" in logout.stdout


def test_login_refuses_an_unknown_key_and_saves_nothing(full_stack: LocalStack, tmp_path: Path) -> None:
    config = tmp_path / "cli.json"
    wrong = "vbk_" + "x" * 43

    refused = cli_api(full_stack, config, "login", "--server", full_stack.web_url, env={"VALIDIBOT_API_KEY": wrong})

    ok(refused, 2)
    assert refused.stderr.startswith("error: The API key is not valid")
    assert wrong not in refused.stdout + refused.stderr
    assert not config.exists()


def test_environment_variables_alone_select_api_mode(full_stack: LocalStack, tmp_path: Path) -> None:
    key = new_key(full_stack, "demo", Role.VIEWER)
    env = {"VALIDIBOT_SERVER": full_stack.web_url, "VALIDIBOT_API_KEY": key}

    result = subprocess.run(
        [str(VALIDIBOT), "runs", "list", "--limit", "1", "--json"],
        env=cli_api_env(full_stack, tmp_path / "none.json", env),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert set(document(result)) == {"items", "next_cursor"}


def test_submit_wait_exits_0_when_valid_and_1_when_invalid_with_the_verdict_printed(api_cli: SignedIn) -> None:
    valid = ok(api_cli("submit", str(EXAMPLES / "building-valid.json"), "-w", "json-basic", "--wait"))
    invalid = ok(api_cli("submit", str(EXAMPLES / "building-invalid.json"), "-w", "json-basic", "--wait"), 1)

    valid_id = valid.stdout.splitlines()[0]
    assert re.fullmatch(r"[0-9a-f]{24}", valid_id)
    assert "SUCCEEDED  building-valid.json" in valid.stdout
    assert f"/orgs/demo/runs/{valid_id}" in valid.stdout
    assert "VALIDATION_FAILED: step 1 'Building summary schema' failed validation with 4 errors" in invalid.stdout
    assert len([line for line in invalid.stdout.splitlines() if line.strip().startswith("ERROR")]) == 4
    assert "ERROR   /building_id  '42' does not match '^B-[0-9]{4}$'" in invalid.stdout


def test_json_output_is_one_document_per_command(api_cli: SignedIn) -> None:
    accepted = document(api_cli("submit", str(EXAMPLES / "building-invalid.json"), "-w", "json-basic", "--json"))
    assert accepted["status"] == "ACCEPTED"
    assert accepted["href"] == f"/api/v1/orgs/demo/runs/{accepted['run_id']}"

    verdict = document(
        api_cli("submit", str(EXAMPLES / "building-invalid.json"), "-w", "json-basic", "--wait", "--json"), 1
    )
    assert verdict["status"] == "FAILED"
    assert verdict["steps"][0]["status"] == "FAILED"
    assert len(verdict["findings"]) == 4

    shown = document(api_cli("runs", "show", verdict["run_id"], "--json"))
    assert (shown["run_id"], shown["counts"]["ERROR"], len(shown["findings"])) == (verdict["run_id"], 4, 4)

    page = document(api_cli("runs", "list", "--workflow", "json-basic", "--status", "failed", "--limit", "1", "--json"))
    assert [run["status"] for run in page["items"]] == ["FAILED"]
    assert page["next_cursor"]
    after = document(api_cli("runs", "list", "--workflow", "json-basic", "--cursor", page["next_cursor"], "--json"))
    assert page["items"][0]["run_id"] not in {run["run_id"] for run in after["items"]}

    again = document(api_cli("rerun", verdict["run_id"], "--json"))
    assert again["status"] == "ACCEPTED"
    assert again["run_id"] != verdict["run_id"]
    followed = document(api_cli("rerun", verdict["run_id"], "--wait", "--json"), 1)
    assert (followed["rerun_of"], followed["status"]) == (verdict["run_id"], "FAILED")

    listed = document(api_cli("workflows", "list", "--json"))
    assert "json-basic" in {workflow["slug"] for workflow in listed["items"]}
    workflow = document(api_cli("workflows", "show", "json-basic", "--json"))
    assert (workflow["slug"], workflow["steps"][0]["validator"]) == ("json-basic", "json-schema")


def test_runs_list_and_show_print_for_people(api_cli: SignedIn) -> None:
    run_id = ok(api_cli("submit", str(EXAMPLES / "building-invalid.json"), "-w", "json-basic", "--wait"), 1)
    run_id = run_id.stdout.splitlines()[0]

    listed = ok(api_cli("runs", "list", "--limit", "5"))
    shown = ok(api_cli("runs", "show", run_id))

    assert any(line.startswith(f"{run_id}  FAILED") for line in listed.stdout.splitlines())
    assert shown.stdout.startswith(f"{run_id}  FAILED  json-basic v")
    assert "  step 1  " in shown.stdout
    assert "'steam' is not one of" in shown.stdout


def test_a_repeated_idempotency_key_gets_the_same_run(api_cli: SignedIn) -> None:
    args = ("submit", str(EXAMPLES / "building-valid.json"), "-w", "json-basic", "--idempotency-key", "cli-test-1")

    first, second = ok(api_cli(*args)), ok(api_cli(*args))

    assert first.stdout == second.stdout


def test_errors_exit_2_with_a_clear_message(api_cli: SignedIn) -> None:
    unknown_workflow = ok(api_cli("submit", str(EXAMPLES / "building-valid.json"), "-w", "no-such-workflow"), 2)
    unknown_run = ok(api_cli("runs", "show", "0" * 24), 2)
    other_org = ok(api_cli("runs", "list", "--org", "other"), 2)
    not_a_rerun = ok(api_cli("rerun", "0" * 24, "--json"), 2)

    assert unknown_workflow.stderr == "error: There is no such resource, or it is not yours to see. (HTTP 404)\n"
    assert unknown_run.stderr == f"error: no run {'0' * 24} in org demo\n"
    assert "(HTTP 404)" in other_org.stderr
    assert not_a_rerun.stdout == ""
    assert not_a_rerun.stderr.startswith("error: ")


def test_a_run_without_verdict_in_time_exits_3_and_a_canceled_one_2(api_cli: SignedIn) -> None:
    # An EnergyPlus simulation takes seconds: a one-second wait cannot see its verdict.
    gave_up = document(api_cli("submit", str(MODEL), "-w", "energyplus-basic", "--wait", "--timeout", "1", "--json"), 3)
    assert gave_up["status"] in {"ACCEPTED", "PENDING", "RUNNING"}

    canceled = cancel_when_cancelable(api_cli, gave_up["run_id"])
    assert canceled == {"run_id": gave_up["run_id"], "status": "CANCELED"}
    again = ok(api_cli("cancel", gave_up["run_id"]), 2)
    assert "has ended already: CANCELED" in again.stderr

    # Followed with --wait while it is canceled from elsewhere: exit 2, its verdict printed.
    follower = api_cli.start("submit", str(MODEL), "-w", "energyplus-basic", "--wait", "--timeout", "120")
    try:
        assert follower.stdout is not None
        run_id = follower.stdout.readline().strip()
        cancel_when_cancelable(api_cli, run_id)
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 2, out + err
    assert out.startswith("CANCELED  small-office.idf")


def test_ctrl_c_while_waiting_exits_130(api_cli: SignedIn) -> None:
    waiting = api_cli.start("submit", str(MODEL), "-w", "energyplus-basic", "--wait")
    try:
        assert waiting.stdout is not None
        run_id = waiting.stdout.readline().strip()
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()

    assert waiting.returncode == 130
    assert err == "interrupted\n"
    assert cancel_when_cancelable(api_cli, run_id)["status"] == "CANCELED"


def test_workflows_apply_uploads_the_file_with_its_resource_files(full_stack: LocalStack, tmp_path: Path) -> None:
    author = signed_in(full_stack, tmp_path / "author.json", Role.AUTHOR)
    executor = signed_in(full_stack, tmp_path / "executor.json", Role.EXECUTOR)
    folder = tmp_path / "workflows"
    shutil.copytree(EXAMPLES / "workflows" / "xml", folder / "xml")
    workflow = folder / "xml-api.yaml"
    workflow.write_text(
        (EXAMPLES / "workflows" / "xml-basic.yaml").read_text().replace("slug: xml-basic", "slug: xml-api")
    )

    applied = ok(author("workflows", "apply", str(workflow)))
    unchanged = document(author("workflows", "apply", str(workflow), "--json"))
    refused = ok(executor("workflows", "apply", str(workflow)), 2)

    assert applied.stdout == "applied  demo/xml-api  version 1\n"
    assert unchanged == {"items": [{"slug": "xml-api", "version": 1, "changed": False}]}
    assert "needs author" in refused.stderr
    # The schema includes its second resource file: both were sent, or no document would validate.
    ok(executor("submit", str(EXAMPLES / "building-valid.xml"), "-w", "xml-api", "--wait"))
    ok(executor("submit", str(EXAMPLES / "building-invalid.xml"), "-w", "xml-api", "--wait"), 1)


def test_users_create_prints_the_password_last_and_it_signs_in(full_stack: LocalStack) -> None:
    email = f"cli-{time.monotonic_ns()}@demo.example"

    created = ok(cli(full_stack, "users", "create", "--org", "demo", "--email", email, "--role", "viewer"))
    password = created.stdout.splitlines()[-1]
    ISSUED_SECRETS.append(password)
    again = ok(cli(full_stack, "users", "create", "--org", "demo", "--email", email, "--role", "viewer"), 2)
    nowhere = ok(cli(full_stack, "users", "create", "--org", "no-such-org", "--email", email, "--role", "viewer"), 2)

    web_session(full_stack, email, password)
    assert again.stderr == f"error: a user with email {email} exists already\n"
    assert nowhere.stderr.startswith("error: there is no org 'no-such-org'")


def test_keys_create_list_and_revoke(full_stack: LocalStack) -> None:
    created = ok(cli(full_stack, "keys", "create", "--org", "demo", "--role", "viewer", "--name", "cli test"))
    key = created.stdout.splitlines()[-1]
    ISSUED_SECRETS.append(key)
    caller = Api(full_stack, key).get("/whoami").json()
    assert (caller["org"], caller["role"], caller["name"]) == ("demo", "viewer", "cli test")

    listed = document(cli(full_stack, "keys", "list", "--org", "demo", "--json"))
    mine = next(item for item in listed["items"] if item["key_id"] == caller["key_id"])
    assert (mine["name"], mine["role"], mine["revoked"]) == ("cli test", "viewer", False)
    assert key not in json.dumps(listed)

    ok(cli(full_stack, "keys", "revoke", caller["key_id"], "--org", "demo"))

    assert Api(full_stack, key).get("/whoami").status_code == 401
    listed = document(cli(full_stack, "keys", "list", "--org", "demo", "--json"))
    assert next(item for item in listed["items"] if item["key_id"] == caller["key_id"])["revoked"] is True
    ok(cli(full_stack, "keys", "revoke", caller["key_id"], "--org", "demo"), 2)


def test_without_login_the_same_commands_read_the_stack_directly_in_the_same_documents(full_stack: LocalStack) -> None:
    submitted = ok(cli(full_stack, "submit", str(EXAMPLES / "building-invalid.json"), "-w", "json-basic", "--wait"), 1)
    run_id = submitted.stdout.splitlines()[0]

    shown = document(cli(full_stack, "runs", "show", run_id, "--json"))
    page = document(cli(full_stack, "runs", "list", "--workflow", "json-basic", "--limit", "1", "--json"))
    listed = document(cli(full_stack, "workflows", "list", "--json"))
    stored = document(cli(full_stack, "workflows", "show", "json-basic", "--json"))

    assert (shown["run_id"], shown["status"], len(shown["findings"])) == (run_id, "FAILED", 4)
    assert shown["href"] == f"/api/v1/orgs/demo/runs/{run_id}"
    assert [run["run_id"] for run in page["items"]] == [run_id]
    assert "json-basic" in {workflow["slug"] for workflow in listed["items"]}
    # Directly, the whole stored version: its steps' config included, which the API does not serve.
    assert stored["steps"][0]["config"]["schema"]
