"""Idempotency-Key on submissions (DESIGN §14): the pure decision, then the API over the in-memory ports."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from schemas.changes import Versioned, Write, idempotency_path
from schemas.documents import IdempotencyDoc
from schemas.enums import Role
from schemas.paths import gs_uri, inbox_object
from tests.fakes import INBOX_BUCKET, FakeWorld, web_app
from tests.support import INVALID, VALID
from web.idempotency import Proceed, Replay, decide
from web.problems import ApiProblem

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
READ_AT = datetime(2026, 11, 22, 11, 59, tzinfo=UTC)
STALE_AFTER = timedelta(seconds=60)
SUBMIT = "/api/v1/orgs/demo/workflows/json-basic/runs"


def record(*, age_seconds: float, run_id: str | None, request_sha256: str = "a" * 64) -> Versioned[IdempotencyDoc]:
    created = NOW - timedelta(seconds=age_seconds)
    doc = IdempotencyDoc(
        org="demo", request_sha256=request_sha256, created_at=created, run_id=run_id, expires_at=NOW + timedelta(days=1)
    )
    return Versioned(doc, READ_AT)


# -- decide(): what a request does, given the record under its key ------------------------------------------------


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (None, Proceed(None)),
        (record(age_seconds=1, run_id="0" * 24), Replay("0" * 24)),
        # A finished record replays however old it is (until its TTL deletes it).
        (record(age_seconds=86_000, run_id="0" * 24), Replay("0" * 24)),
        (record(age_seconds=60, run_id=None), Proceed(READ_AT)),
        (record(age_seconds=3600, run_id=None), Proceed(READ_AT)),
    ],
    ids=["no-record", "done", "done-long-ago", "stale-at-the-limit", "stale"],
)
def test_decide_proceeds_or_replays(found: Versioned[IdempotencyDoc] | None, expected: Proceed | Replay) -> None:
    assert decide(found, "a" * 64, NOW, STALE_AFTER) == expected


@pytest.mark.parametrize(
    ("found", "status", "says"),
    [
        (record(age_seconds=1, run_id="0" * 24, request_sha256="b" * 64), 422, "used with another request body"),
        (record(age_seconds=3600, run_id=None, request_sha256="b" * 64), 422, "used with another request body"),
        (record(age_seconds=59, run_id=None), 409, "still in progress"),
    ],
    ids=["other-body-done", "other-body-stale", "in-progress"],
)
def test_decide_refuses(found: Versioned[IdempotencyDoc], status: int, says: str) -> None:
    with pytest.raises(ApiProblem) as refused:
        decide(found, "a" * 64, NOW, STALE_AFTER)

    assert refused.value.status == status
    assert says in (refused.value.detail or "")


# -- the API over the in-memory ports ---------------------------------------------------------------------------


def app_with_key(world: FakeWorld, role: Role = Role.EXECUTOR) -> tuple[Flask, str]:
    app = web_app(world)
    return app, app.extensions["validibot"].accounts.create_key("demo", role, "ci", "tests")


def submit(
    app: Flask, key: str, data: bytes, idempotency_key: str | None, filename: str = "building.json"
) -> TestResponse:
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return app.test_client().post(
        SUBMIT, headers=headers, data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data"
    )


def uploads(world: FakeWorld, filename: str = "building.json") -> int:
    return world.objects.generations_written(gs_uri(INBOX_BUCKET, inbox_object("demo", "json-basic", filename)))


def test_the_same_key_and_body_replay_the_first_run_without_a_second_upload() -> None:
    world = FakeWorld()
    app, key = app_with_key(world)

    first = submit(app, key, VALID, "order-1")
    again = submit(app, key, VALID, "order-1")

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json == first.json
    assert again.headers["Location"] == first.headers["Location"] == first.json["href"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert uploads(world) == 1


@pytest.mark.parametrize(
    ("data", "filename"), [(INVALID, "building.json"), (VALID, "renamed.json")], ids=["other-bytes", "other-name"]
)
def test_the_same_key_with_another_body_is_refused_and_uploads_nothing(data: bytes, filename: str) -> None:
    world = FakeWorld()
    app, key = app_with_key(world)
    submit(app, key, VALID, "order-1")

    refused = submit(app, key, data, "order-1", filename)

    assert refused.status_code == 422
    assert refused.content_type == "application/problem+json"
    assert "used with another request body" in refused.json["detail"]
    assert uploads(world) + uploads(world, "renamed.json") == 1


def test_an_idempotency_key_is_scoped_to_the_api_key_that_sent_it() -> None:
    world = FakeWorld()
    app, key = app_with_key(world)
    other_key = app.extensions["validibot"].accounts.create_key("demo", Role.EXECUTOR, "other", "tests")

    mine, theirs = submit(app, key, VALID, "order-1"), submit(app, other_key, VALID, "order-1")

    assert mine.json["run_id"] != theirs.json["run_id"]
    assert "Idempotent-Replayed" not in theirs.headers
    assert uploads(world) == 2


def test_without_a_key_every_request_is_a_new_submission() -> None:
    world = FakeWorld()
    app, key = app_with_key(world)

    runs = {submit(app, key, VALID, None).json["run_id"] for _ in range(2)}

    assert len(runs) == 2
    assert uploads(world) == 2


@pytest.mark.parametrize("idempotency_key", ["   ", "tab\there", "x" * 256], ids=["blank", "control", "too-long"])
def test_a_malformed_idempotency_key_is_refused(idempotency_key: str) -> None:
    world = FakeWorld()
    app, key = app_with_key(world)

    refused = submit(app, key, VALID, idempotency_key)

    assert refused.status_code == 422
    assert refused.content_type == "application/problem+json"
    assert uploads(world) == 0


def test_a_refused_submission_leaves_its_key_free_for_the_corrected_request() -> None:
    world = FakeWorld()
    app, key = app_with_key(world)

    refused = submit(app, key, VALID, "order-1", " leading-space.json")
    corrected = submit(app, key, VALID, "order-1")

    assert refused.status_code == 422
    assert "leading or trailing white space" in refused.json["detail"]
    assert corrected.status_code == 202
    assert "Idempotent-Replayed" not in corrected.headers
    assert world.fake_store.collection("idempotency") != {}


def unfinished(world: FakeWorld) -> None:
    """Turn the one record into one whose request died after claiming its key and before recording its run."""
    [(record_id, data)] = world.fake_store.collection("idempotency").items()
    path = idempotency_path(record_id)
    found = world.fake_store.idempotency(record_id)
    doc = IdempotencyDoc.model_validate({**data, "run_id": None, "created_at": world.clock()})
    world.fake_store.commit([Write(path, doc, "replace", found.update_time)])


def test_a_request_still_in_progress_is_a_409_until_stale_then_a_retry_finds_the_upload_it_left() -> None:
    """The first request died after its upload landed but before it recorded the run: the retry that takes the
    record over answers with that run (the upload carries the record's id), uploading nothing again."""
    world = FakeWorld(idempotency_stale_seconds=60)
    app, key = app_with_key(world)
    first = submit(app, key, VALID, "order-1")
    unfinished(world)

    world.clock.advance(59)
    busy = submit(app, key, VALID, "order-1")
    world.clock.advance(1)
    taken_over = submit(app, key, VALID, "order-1")
    replayed = submit(app, key, VALID, "order-1")

    assert busy.status_code == 409
    assert "still in progress" in busy.json["detail"]
    assert busy.json["type"] == "urn:validibot:problem:idempotency-in-progress"
    assert (taken_over.status_code, taken_over.json["run_id"]) == (202, first.json["run_id"])
    assert taken_over.headers["Idempotent-Replayed"] == "true"
    assert replayed.json["run_id"] == first.json["run_id"]
    assert uploads(world) == 1


def test_a_taken_over_request_whose_upload_is_gone_uploads_again() -> None:
    """The first request died before its upload (or another upload replaced it): the retry makes the run."""
    world = FakeWorld(idempotency_stale_seconds=60)
    app, key = app_with_key(world)
    first = submit(app, key, VALID, "order-1")
    unfinished(world)
    world.upload(inbox_object("demo", "json-basic", "building.json"), VALID)  # someone else's, untagged
    world.clock.advance(60)

    taken_over = submit(app, key, VALID, "order-1")

    assert taken_over.status_code == 202
    assert taken_over.json["run_id"] != first.json["run_id"]
    assert "Idempotent-Replayed" not in taken_over.headers
    assert uploads(world) == 3
