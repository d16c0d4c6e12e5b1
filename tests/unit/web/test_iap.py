"""Behind Identity-Aware Proxy: the person is whom IAP's verified header names, still only as a member of the org;
the header is verified against IAP's keys and the configured audience (bootstrap.Services.iap_email)."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from flask import Request
from google.auth import jwt
from google.auth.crypt import es256

from bootstrap import IAP_CERTS_URL, IAP_ISSUER, Services
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


class KeysResponse:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    def raise_for_status(self) -> None:
        return None

    def json(self) -> dict[str, str]:
        return self.keys


def es256_key() -> tuple[str, str]:
    """A private and a public key in PEM, as IAP signs with and publishes."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


def assertion(private_pem: str, **claims: object) -> str:
    now = int(time.time())
    payload = {"iss": IAP_ISSUER, "aud": AUDIENCE, "email": "ana@demo.example", "iat": now, "exp": now + 600}
    signer = es256.ES256Signer.from_string(private_pem, key_id="iap-key-1")
    return jwt.encode(signer, {**payload, **claims}).decode()


def test_the_header_is_verified_against_iaps_keys_issuer_and_audience(monkeypatch: pytest.MonkeyPatch) -> None:
    private_pem, public_pem = es256_key()
    impostor_pem, _ = es256_key()
    fetched: list[str] = []

    def get(url: str, timeout: float) -> KeysResponse:
        fetched.append(url)
        return KeysResponse({"iap-key-1": public_pem})

    monkeypatch.setattr("requests.get", get)
    services = Services(Settings(iap_audience=AUDIENCE))

    def email(token: str | None) -> str | None:
        return services.iap_email(Headers(**({"x-goog-iap-jwt-assertion": token} if token else {})))

    assert email(assertion(private_pem)) == "ana@demo.example"
    assert email(assertion(impostor_pem)) is None  # not signed by IAP's key
    assert email(assertion(private_pem, aud="/projects/123/global/backendServices/999")) is None
    assert email(assertion(private_pem, iss="https://accounts.google.com")) is None
    assert email(assertion(private_pem, exp=int(time.time()) - 3600)) is None
    assert email("not-a-token") is None
    assert email(None) is None
    assert fetched == [IAP_CERTS_URL]  # fetched once, then kept
