"""Firestore adapter of the AccountStore port: users, memberships, API keys, Idempotency-Key records."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from google.cloud import firestore

from schemas.changes import (
    Committed,
    DocPath,
    Versioned,
    Write,
    api_key_path,
    idempotency_path,
    member_path,
    user_path,
)
from schemas.documents import ApiKeyDoc, IdempotencyDoc, MemberDoc, UserDoc
from store.runs import commit_writes, delete_unchanged, read_doc, read_versioned


class FirestoreAccountStore:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def user(self, user_id: str) -> Versioned[UserDoc] | None:
        return read_versioned(self._db, user_path(user_id), UserDoc)

    def member(self, org: str, user_id: str) -> MemberDoc | None:
        return read_doc(self._db, member_path(org, user_id), MemberDoc)

    def api_key(self, key_hash: str) -> Versioned[ApiKeyDoc] | None:
        return read_versioned(self._db, api_key_path(key_hash), ApiKeyDoc)

    def api_keys(self, org: str) -> list[tuple[str, ApiKeyDoc]]:
        query = (
            self._db.collection("api_keys").where(filter=firestore.FieldFilter("org", "==", org)).order_by("created_at")
        )
        return [(d.id, ApiKeyDoc.model_validate(d.to_dict())) for d in query.stream()]

    def idempotency(self, record_id: str) -> Versioned[IdempotencyDoc] | None:
        return read_versioned(self._db, idempotency_path(record_id), IdempotencyDoc)

    def delete(self, path: DocPath, read_at: datetime) -> bool:
        return delete_unchanged(self._db, path, read_at)

    def commit(self, writes: Iterable[Write]) -> Committed:
        return commit_writes(self._db, writes)
