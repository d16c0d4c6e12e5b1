"""Identities, keys and their derived ids (DESIGN §14): pure functions, so the web, the CLI and the tests agree.

Ids of documents are derived, never chosen by callers: a user's id from the email, a key's from its sha256. The
key and the password themselves are stored nowhere.
"""

from __future__ import annotations

import hashlib
import re
import secrets

API_KEY_PREFIX = "vbk_"
# 32 random bytes, url-safe base64 without padding: 43 characters.
_API_KEY = re.compile(r"^vbk_[A-Za-z0-9_-]{43}$")
# Deliberately plain: enough to refuse what cannot be an address and to keep document ids clean.
_EMAIL = re.compile(r"^[^@\s/]{1,64}@[^@\s/]{1,255}$")
KEY_ID_LENGTH = 12


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def is_api_key(value: str) -> bool:
    return bool(_API_KEY.match(value))


def key_hash(key: str) -> str:
    """The key's document id. A key carries 256 random bits, so a plain sha256 cannot be reversed or guessed."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key_hash_hex: str) -> str:
    """What people see and revoke a key by: the start of its hash, which says nothing about the key."""
    return key_hash_hex[:KEY_ID_LENGTH]


def new_password() -> str:
    return secrets.token_urlsafe(18)


def normal_email(email: str) -> str:
    """The email as an identity: trimmed and lowercased; ValueError when it cannot be an address."""
    normal = email.strip().lower()
    if not _EMAIL.match(normal):
        raise ValueError(f"{email!r} is not an email address")
    return normal


def user_id_for(email: str) -> str:
    return "u-" + hashlib.sha256(normal_email(email).encode()).hexdigest()[:32]


def idempotency_record_id(key_hash_hex: str, idempotency_key: str) -> str:
    """One record per API key and Idempotency-Key: another key's same Idempotency-Key is another request."""
    return hashlib.sha256(f"{key_hash_hex}\n{idempotency_key}".encode()).hexdigest()
