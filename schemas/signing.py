"""Signed outputs (DESIGN §6): a verdict counts only when it carries a signature made with its attempt's key.

The callback_id is a dedupe key, readable by anything that reads the pipeline bucket; it proves nothing. Each
attempt's signing key is derived from a service secret the functions hold and a job never sees, so a job can sign
for its own attempt and no other. The signature covers the sha256 of the exact output.json bytes, which lets an
object too large to hold in memory be checked while it streams.
"""

from __future__ import annotations

import hashlib
import hmac
import re

SIGNATURE_METADATA_KEY = "validibot-signature"
SIGNING_KEY_ENV = "VALIDIBOT_SIGNING_KEY"
SIGNING_SECRET_ENV = "VALIDIBOT_SIGNING_SECRET"
# What new_callback_id() makes (secrets.token_urlsafe(32)); anything else is refused before it names a document.
_CALLBACK_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")


def is_callback_id(value: str) -> bool:
    return bool(_CALLBACK_ID.match(value))


def attempt_signing_key(secret: bytes, *, run_id: str, attempt_id: str, callback_id: str) -> str:
    """The key one attempt signs its output with (hex), bound to its run, its attempt and its callback_id."""
    return hmac.new(secret, f"{run_id}:{attempt_id}:{callback_id}".encode(), hashlib.sha256).hexdigest()


def sign_digest(signing_key: str, sha256_hex: str) -> str:
    return hmac.new(
        bytes.fromhex(signing_key), f"validibot.output.v1:{sha256_hex}".encode(), hashlib.sha256
    ).hexdigest()


def sign(signing_key: str, data: bytes) -> str:
    return sign_digest(signing_key, hashlib.sha256(data).hexdigest())


def signature_valid(signing_key: str, sha256_hex: str, signature: str | None) -> bool:
    return signature is not None and hmac.compare_digest(sign_digest(signing_key, sha256_hex), signature)
