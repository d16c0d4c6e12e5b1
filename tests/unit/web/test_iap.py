"""Behind Identity-Aware Proxy: the person is whom IAP's verified header names, still only as a member of the org;
the header is verified against IAP's keys and the configured audience (bootstrap.Services.iap_email)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Request
from google.auth.exceptions import GoogleAuthError

from bootstrap import IAP_CERTS_URL, Services
from schemas.enums import Role
from schemas.settings import Settings
from tests.fakes import FakeWorld, web_app

AUDIENCE = "/projects/123/global/backendServices/456"


def test_the_verified_email_is_the_person_and_membership_still_decides() -> None:
    world = FakeWorld()
    vouched: dict[str, str | None] = {"email": None}

    def iap_email(request: Request) -> str | None:
        return vouched["email"]

    app = web_app(world, iap_email=iap_email)
    accounts = app.extensions["validibot"].accounts
    accounts.create_user("demo", "ana@demo.example", Role.VIEWER)
    accounts.create_user("other", "bo@other.example", Role.VIEWER)
    client = app.test_client()

    assert client.get("/orgs/demo/runs").headers["Location"].startswith("/signin")
    vouched["email"] = "ana@demo.example"
    assert client.get("/orgs/demo/runs").status_code == 200
    vouched["email"] = "bo@other.example"
    assert client.get("/orgs/demo/runs").status_code == 404
    vouched["email"] = "nobody@demo.example"
    assert client.get("/orgs/demo/runs").headers["Location"].startswith("/signin")


class Headers:
    def __init__(self, **headers: str) -> None:
        self.headers = headers


def test_the_header_is_verified_with_iaps_keys_and_the_audience(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def verify_token(token: str, request: object, audience: str, certs_url: str) -> dict[str, str]:
        calls.append({"token": token, "audience": audience, "certs_url": certs_url})
        if token != "signed-by-iap":
            raise GoogleAuthError("bad signature")
        return {"email": "ana@demo.example"}

    monkeypatch.setattr("google.oauth2.id_token.verify_token", verify_token)
    services = Services(Settings(iap_audience=AUDIENCE))

    assert services.iap_email(Headers(**{"x-goog-iap-jwt-assertion": "signed-by-iap"})) == "ana@demo.example"
    assert services.iap_email(Headers(**{"x-goog-iap-jwt-assertion": "forged"})) is None
    assert services.iap_email(Headers()) is None
    assert calls == [
        {"token": "signed-by-iap", "audience": AUDIENCE, "certs_url": IAP_CERTS_URL},
        {"token": "forged", "audience": AUDIENCE, "certs_url": IAP_CERTS_URL},
    ]
