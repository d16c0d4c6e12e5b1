"""The web's limits (DESIGN §14) that need settings of their own, in process over the real emulators: the per-key
rate limit of the API, the sign-in lockout and its end, and Idempotency-Key records that a request left unfinished."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from schemas.access import idempotency_record_id, key_hash, user_id_for
from schemas.changes import Write, idempotency_path
from schemas.enums import Role
from tests.fakes import ManualClock
from tests.support import VALID, Harness, csrf_token, web_with

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"
SUBMIT = "/api/v1/orgs/demo/workflows/json-basic/runs"


def new_key(app: Flask, role: Role = Role.VIEWER) -> str:
    return app.extensions["validibot"].accounts.create_key("demo", role, "limits test", "tests")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- the rate limit ----------------------------------------------------------------------------------------------


def test_a_key_over_the_rate_limit_gets_429_problems_with_retry_after_and_other_keys_do_not(harness: Harness) -> None:
    app = web_with(harness, api_rate_limit="3 per minute")
    client, key, other = app.test_client(), new_key(app), new_key(app)

    answered = [client.get("/api/v1/whoami", headers=bearer(key)) for _ in range(4)]

    assert [r.status_code for r in answered] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in answered[:3]] == ["2", "1", "0"]
    limited = answered[3]
    assert limited.content_type == PROBLEM_JSON
    assert limited.json == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "3 per 1 minute",
        "instance": "/api/v1/whoami",
    }
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # Every operation counts against the same key's limit.
    assert client.get("/api/v1/orgs/demo/runs", headers=bearer(key)).status_code == 429
    assert client.get("/api/v1/whoami", headers=bearer(other)).status_code == 200
    # The document is not an operation: reading it is never limited.
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_requests_without_a_key_are_limited_by_their_address(harness: Harness) -> None:
    app = web_with(harness, api_rate_limit="2 per minute")
    client = app.test_client()

    anonymous = [client.get("/api/v1/whoami", environ_base={"REMOTE_ADDR": "192.0.2.7"}) for _ in range(3)]
    elsewhere = client.get("/api/v1/whoami", environ_base={"REMOTE_ADDR": "192.0.2.8"})

    assert [r.status_code for r in anonymous] == [401, 401, 429]
    assert anonymous[2].content_type == PROBLEM_JSON
    assert elsewhere.status_code == 401


def test_made_up_keys_share_their_addresss_budget(harness: Harness) -> None:
    app = web_with(harness, api_rate_limit="2 per minute")
    client = app.test_client()

    made_up = [
        client.get(
            "/api/v1/whoami",
            headers={"Authorization": f"Bearer vbk_{n:043d}"},
            environ_base={"REMOTE_ADDR": "192.0.2.9"},
        )
        for n in range(3)
    ]

    assert [r.status_code for r in made_up] == [401, 401, 429]


def test_sign_in_posts_are_limited_per_address_across_accounts(harness: Harness) -> None:
    app = web_with(harness, signin_rate_limit="3 per minute")
    client = app.test_client()
    token = csrf_token(client.get("/signin").text)

    def guess(n: int, address: str = "192.0.2.10") -> int:
        form = {"email": f"person-{n}@demo.example", "password": "guess", "csrf_token": token}
        return client.post("/signin", data=form, environ_base={"REMOTE_ADDR": address}).status_code

    assert [guess(n) for n in range(4)] == [401, 401, 401, 429]
    assert guess(5, "192.0.2.11") == 401


# -- the sign-in lockout -----------------------------------------------------------------------------------------


def sign_in(app: Flask, email: str, password: str) -> tuple[TestResponse, FlaskClient]:
    client = app.test_client()
    token = csrf_token(client.get("/signin").text)
    return client.post("/signin", data={"email": email, "password": password, "csrf_token": token}), client


def test_wrong_passwords_lock_sign_in_until_the_lockout_has_passed(harness: Harness) -> None:
    clock = ManualClock(datetime.now(UTC))
    app = web_with(harness, clock, signin_max_failures=3, signin_lockout_seconds=300)
    email = f"locked-{uuid.uuid4().hex[:8]}@demo.example"
    password = app.extensions["validibot"].accounts.create_user("demo", email, Role.VIEWER)

    wrong = [sign_in(app, email, f"wrong-{n}")[0] for n in range(3)]
    locked, _ = sign_in(app, email, password)

    assert [r.status_code for r in wrong] == [401] * 3
    assert all("The email or the password is wrong." in r.text for r in wrong)
    assert locked.status_code == 401  # the right password, refused while locked
    assert "sign-in is locked for 5 minutes" in locked.text
    stored = harness.services.account_store.user(user_id_for(email)).doc
    assert stored.locked_until == clock() + timedelta(seconds=300)
    clock.advance(300)
    signed, client = sign_in(app, email, password)
    assert (signed.status_code, signed.headers["Location"]) == (302, "/")
    assert client.get("/orgs/demo/runs").status_code == 200


# -- Idempotency-Key records on Firestore --------------------------------------------------------------------------


def submit(app: Flask, key: str, idempotency_key: str, filename: str = "limits.json") -> TestResponse:
    return app.test_client().post(
        SUBMIT,
        headers={**bearer(key), "Idempotency-Key": idempotency_key},
        data={"file": (io.BytesIO(VALID), filename)},
        content_type="multipart/form-data",
    )


def test_a_record_its_request_left_unfinished_is_409_until_stale_then_its_upload_is_found(harness: Harness) -> None:
    clock = ManualClock(datetime.now(UTC))
    app = web_with(harness, clock, idempotency_stale_seconds=30)
    key, idempotency_key = new_key(app, Role.EXECUTOR), f"order-{uuid.uuid4().hex}"
    first = submit(app, key, idempotency_key)
    # As if the first request had died between claiming the key and recording its run.
    store = harness.services.account_store
    record_id = idempotency_record_id(key_hash(key), idempotency_key)
    found = store.idempotency(record_id)
    unfinished = found.doc.model_copy(update={"run_id": None, "created_at": clock()})
    store.commit([Write(idempotency_path(record_id), unfinished, "replace", found.update_time)])

    clock.advance(29)
    busy = submit(app, key, idempotency_key)
    clock.advance(1)
    taken_over = submit(app, key, idempotency_key)
    replayed = submit(app, key, idempotency_key)

    assert first.status_code == 202
    assert busy.status_code == 409
    assert "still in progress" in busy.json["detail"]
    # The first upload landed (tagged with the record in Cloud Storage's metadata): the retry answers with its run.
    assert (taken_over.status_code, taken_over.json["run_id"]) == (202, first.json["run_id"])
    assert taken_over.headers["Idempotent-Replayed"] == "true"
    assert replayed.json["run_id"] == first.json["run_id"]
    assert store.idempotency(record_id).doc.run_id == first.json["run_id"]


def test_a_refused_submission_frees_its_idempotency_key_at_once(harness: Harness) -> None:
    app = web_with(harness)
    key, idempotency_key = new_key(app, Role.EXECUTOR), f"order-{uuid.uuid4().hex}"

    refused = submit(app, key, idempotency_key, filename="trailing-space.json ")
    corrected = submit(app, key, idempotency_key)

    assert refused.status_code == 422
    assert corrected.status_code == 202
    assert "Idempotent-Replayed" not in corrected.headers
    record = harness.services.account_store.idempotency(idempotency_record_id(key_hash(key), idempotency_key))
    assert record.doc.run_id == corrected.json["run_id"]
