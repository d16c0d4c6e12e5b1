"""The CLI's API mode without a server: where its key comes from, what each verdict exits with, and how its client
retries (a submission repeated with the same Idempotency-Key) and reports errors (never with the key)."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.api_client import ApiClient, ApiError, ApiTarget, config_path, read_config, resolve_target, write_config
from deploy.cli import EXIT_ERROR, EXIT_FAILED, EXIT_PASSED, verdict_exit_code
from schemas.enums import RunStatus

KEY = "vbk_" + "k" * 43
OTHER_KEY = "vbk_" + "o" * 43
SAVED = ApiTarget("http://saved.example", KEY, "demo")
ACCEPTED = {"run_id": "a" * 24, "status": "ACCEPTED", "href": f"/api/v1/orgs/demo/runs/{'a' * 24}"}


def test_nothing_saved_and_no_environment_means_direct_mode() -> None:
    assert resolve_target({}, None) is None


def test_one_variable_alone_is_not_api_mode() -> None:
    assert resolve_target({"VALIDIBOT_API_KEY": KEY}, None) is None
    assert resolve_target({"VALIDIBOT_SERVER": "http://env.example"}, None) is None


def test_the_saved_login_is_api_mode_with_its_org() -> None:
    assert resolve_target({}, SAVED) == SAVED


def test_both_variables_are_api_mode_without_a_saved_login() -> None:
    target = resolve_target({"VALIDIBOT_SERVER": "http://env.example/", "VALIDIBOT_API_KEY": KEY}, None)

    assert target == ApiTarget("http://env.example", KEY, None)


def test_the_environment_wins_over_the_saved_login_field_by_field() -> None:
    server = resolve_target({"VALIDIBOT_SERVER": "http://env.example"}, SAVED)
    key = resolve_target({"VALIDIBOT_API_KEY": OTHER_KEY}, SAVED)

    assert server == ApiTarget("http://env.example", KEY, "demo")
    # Another key may be another org's: it is asked for, not assumed.
    assert key == ApiTarget("http://saved.example", OTHER_KEY, None)


def test_the_server_may_be_given_with_the_api_prefix() -> None:
    target = resolve_target({"VALIDIBOT_SERVER": "http://env.example/api/v1/", "VALIDIBOT_API_KEY": KEY}, None)

    assert target == ApiTarget("http://env.example", KEY, None)


def test_the_config_path_is_the_variable_else_under_home() -> None:
    assert config_path({"VALIDIBOT_CLI_CONFIG": "/tmp/x.json"}) == Path("/tmp/x.json")
    assert config_path({}) == Path("~/.validibot/cli.json").expanduser()


def test_the_key_never_shows_in_a_target_repr() -> None:
    assert KEY not in repr(SAVED)
    assert KEY not in repr(ApiClient("http://x", KEY))


def test_the_saved_config_is_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".validibot" / "cli.json"

    write_config(path, SAVED)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_config(path) == SAVED
    assert read_config(tmp_path / "missing.json") is None
    path.write_text("[]")
    with pytest.raises(ValueError, match="run `validibot login` again"):
        read_config(path)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (RunStatus.SUCCEEDED, EXIT_PASSED),
        (RunStatus.FAILED, EXIT_FAILED),
        (RunStatus.CANCELED, EXIT_ERROR),
        (RunStatus.TIMED_OUT, EXIT_ERROR),
    ],
)
def test_each_verdict_has_its_exit_code(status: RunStatus, code: int) -> None:
    assert verdict_exit_code(status.value) == code
    assert (EXIT_PASSED, EXIT_FAILED, EXIT_ERROR) == (0, 1, 2)


# -- The client, over a session that answers from a script ----------------------------------------------------


def answer(status: int, body: dict[str, Any], content_type: str = "application/json") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = content_type
    return response


def problem(status: int, detail: str) -> requests.Response:
    return answer(status, {"title": "x", "status": status, "detail": detail}, "application/problem+json")


@dataclass
class ScriptedSession:
    """Answers requests in order with `answers` (an exception is raised); records what each request sent."""

    answers: list[requests.Response | Exception]
    sent: list[dict[str, Any]] = field(default_factory=list)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.sent.append({"method": method, "url": url, **kwargs})
        found = self.answers.pop(0)
        if isinstance(found, Exception):
            raise found
        return found


def client(*answers: requests.Response | Exception) -> tuple[ApiClient, ScriptedSession]:
    session = ScriptedSession(list(answers))
    return ApiClient("http://api.example/", KEY, session=session, retry_wait=0), session  # type: ignore[arg-type]


def test_a_submission_is_retried_with_the_same_idempotency_key(tmp_path: Path) -> None:
    file = tmp_path / "building.json"
    file.write_text("{}")
    api, session = client(requests.ConnectionError("reset"), problem(503, "busy"), answer(202, ACCEPTED))

    accepted = api.submit("demo", "json-basic", file)

    assert accepted.run_id == "a" * 24
    keys = {sent["headers"]["Idempotency-Key"] for sent in session.sent}
    assert len(session.sent) == 3
    assert len(keys) == 1
    assert session.sent[0]["url"] == "http://api.example/api/v1/orgs/demo/workflows/json-basic/runs"
    assert all(sent["files"]["file"][1] == b"{}" for sent in session.sent)


def test_two_submissions_have_two_idempotency_keys(tmp_path: Path) -> None:
    file = tmp_path / "building.json"
    file.write_text("{}")
    api, session = client(answer(202, ACCEPTED), answer(202, ACCEPTED))

    api.submit("demo", "json-basic", file)
    api.submit("demo", "json-basic", file)

    assert session.sent[0]["headers"]["Idempotency-Key"] != session.sent[1]["headers"]["Idempotency-Key"]


def test_a_rerun_is_never_repeated() -> None:
    api, session = client(problem(503, "busy"))

    with pytest.raises(ApiError) as raised:
        api.rerun("demo", "a" * 24)

    assert len(session.sent) == 1
    assert raised.value.status == 503


def test_a_rate_limited_rerun_is_repeated_as_it_was_refused_before_anything_was_done() -> None:
    limited = problem(429, "slow down")
    limited.headers["Retry-After"] = "0"
    api, session = client(limited, answer(202, ACCEPTED))

    assert api.rerun("demo", "b" * 24).run_id == "a" * 24
    assert len(session.sent) == 2


def test_no_answer_after_the_retries_is_an_error_without_the_key() -> None:
    api, session = client(*(requests.ConnectionError(f"refused {KEY}?") for _ in range(3)))

    with pytest.raises(ApiError) as raised:
        api.whoami()

    assert len(session.sent) == 3
    assert raised.value.status == 0
    assert KEY not in str(raised.value)


def test_a_refusal_carries_the_problems_detail_and_status() -> None:
    api, _ = client(problem(409, "run x has ended already: CANCELED"))

    with pytest.raises(ApiError) as raised:
        api.cancel("demo", "x")

    assert str(raised.value) == "run x has ended already: CANCELED (HTTP 409)"


def test_a_run_not_there_yet_is_none() -> None:
    api, _ = client(problem(404, "There is no such resource, or it is not yours to see."))

    assert api.run("demo", "a" * 24) is None


def test_every_request_carries_the_key_as_a_bearer_token() -> None:
    api, session = client(answer(200, {"org": "demo", "role": "viewer", "key_id": "abc", "name": "n"}))

    assert api.whoami().org == "demo"
    assert session.sent[0]["headers"]["Authorization"] == f"Bearer {KEY}"
