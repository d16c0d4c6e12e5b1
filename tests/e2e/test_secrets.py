"""Keys and passwords are shown once and kept nowhere: not in the stack's logs, not in Firestore (only their
hashes), not in any error a caller gets back (DESIGN §14; issue 13, Done-when 5). The whole suite's issued secrets
are checked against the logs once more when the stack stops (tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.cloud import firestore

from deploy.stack import LocalStack
from schemas.access import key_hash, key_id, user_id_for
from schemas.enums import Role
from tests.support import (
    EXAMPLES,
    ISSUED_SECRETS,
    Api,
    csrf_token,
    new_key,
    new_user,
    secrets_in_logs,
    stack_accounts,
    web_session,
)

pytestmark = pytest.mark.e2e


def every_document(db: firestore.Client) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every document of the project, subcollections included, with its path."""

    def walk(collections: Iterator[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        for collection in collections:
            for reference in collection.list_documents():
                snapshot = reference.get()
                if snapshot.exists:
                    yield reference.path, snapshot.to_dict() or {}
                yield from walk(reference.collections())

    yield from walk(db.collections())


def test_keys_and_passwords_are_in_no_log_no_document_and_no_error(full_stack: LocalStack) -> None:
    web_url = full_stack.web_url
    email, password = new_user(full_stack, "demo", Role.EXECUTOR)
    key, revoked = new_key(full_stack, "demo", Role.EXECUTOR), new_key(full_stack, "demo", Role.VIEWER)
    wrong_password = "not-the-password-" + password[::-1]
    unknown_key = "vbk_" + key[4:][::-1]
    ISSUED_SECRETS.extend([wrong_password, unknown_key])
    secrets = [password, key, revoked, wrong_password, unknown_key]

    # People: a wrong password, then the right one; the pages they see.
    stranger = requests.Session()
    form = stranger.get(f"{web_url}/signin").text
    refused = stranger.post(
        f"{web_url}/signin", data={"email": email, "password": wrong_password, "csrf_token": csrf_token(form)}
    )
    assert refused.status_code == 401
    browser = web_session(full_stack, email, password)
    pages = [refused.text, browser.get(f"{web_url}/orgs/demo/runs").text]

    # Programs: a submission, a revoked key, an unknown key, a malformed header.
    api = Api(full_stack, key)
    with (EXAMPLES / "building-valid.json").open("rb") as file:
        accepted = api.post(
            "/orgs/demo/workflows/json-basic/runs", files={"file": file}, headers={"Idempotency-Key": "secrets"}
        )
    assert accepted.status_code == 202, accepted.text
    api.wait_for_verdict("demo", accepted.json()["run_id"])
    stack_accounts(full_stack).revoke_key("demo", key_id(key_hash(revoked)))
    refusals = [
        Api(full_stack, revoked).get("/orgs/demo/runs"),
        Api(full_stack, unknown_key).get("/orgs/demo/runs"),
        Api(full_stack, None).get("/orgs/demo/runs", headers={"Authorization": f"Basic {key}"}),
    ]
    for refusal in refusals:
        assert refusal.status_code == 401
        assert refusal.headers["Content-Type"] == "application/problem+json"
    answers = [accepted, *refusals]
    bodies = pages + [answer.text + json.dumps(dict(answer.headers)) for answer in answers]
    assert not [secret[:8] for secret in secrets for body in bodies if secret in body]

    # Firestore holds the hashes, never the secrets.
    db = full_stack.services.firestore_client
    documents = list(every_document(db))
    stored = "\n".join(f"{path} {json.dumps(doc, default=str)}" for path, doc in documents)
    assert not [secret[:8] for secret in secrets if secret in stored]
    paths = {path for path, _ in documents}
    assert f"api_keys/{key_hash(key)}" in paths
    user = dict(documents)[f"users/{user_id_for(email)}"]
    assert user["password_hash"].startswith("$argon2id$")

    # And the logs of every process of the stack, as they are now.
    assert secrets_in_logs(full_stack.log_dir, secrets) == {}
