"""What a pure transition decides: documents to write by path (each with how it may be written), and the effects
to perform once they are committed (lifecycle events to publish, objects to create). Also what it reads: a document
with the update time that a later `replace` is conditioned on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from schemas.documents import Document
from schemas.lifecycle import LifecycleEvent

D = TypeVar("D", bound=Document)

DocPath = tuple[str, ...]


def run_path(run_id: str) -> DocPath:
    return ("runs", run_id)


def step_path(run_id: str, step_number: int) -> DocPath:
    return ("runs", run_id, "steps", f"{step_number:02d}")


def attempt_path(run_id: str, attempt_id: str) -> DocPath:
    return ("runs", run_id, "attempts", attempt_id)


def finding_path(run_id: str, finding_id: str) -> DocPath:
    return ("runs", run_id, "findings", finding_id)


def receipt_path(receipt_id: str) -> DocPath:
    return ("receipts", receipt_id)


def workflow_path(org: str, slug: str) -> DocPath:
    return ("workflows", f"{org}.{slug}")


def workflow_version_path(org: str, slug: str, version: int) -> DocPath:
    return (*workflow_path(org, slug), "versions", f"{version:04d}")


def org_path(org: str) -> DocPath:
    return ("orgs", org)


def member_path(org: str, user_id: str) -> DocPath:
    return ("orgs", org, "members", user_id)


def user_path(user_id: str) -> DocPath:
    return ("users", user_id)


def api_key_path(key_hash: str) -> DocPath:
    return ("api_keys", key_hash)


def idempotency_path(record_id: str) -> DocPath:
    return ("idempotency", record_id)


@dataclass(frozen=True)
class Write:
    """`create` fails if the document exists; `replace` fails if it changed since `read_at`; `upsert` never fails.

    A commit is all-or-nothing, so a create or a stale replace is the dedupe and the lock of every stage.
    """

    path: DocPath
    doc: Document
    mode: Literal["create", "replace", "upsert"]
    read_at: datetime | None = None


@dataclass(frozen=True)
class Versioned(Generic[D]):
    """A document as read, with the update time a `replace` of it is conditioned on."""

    doc: D
    update_time: datetime


# What a commit wrote: each document as written, with the update time a later `replace` of it is conditioned on, so
# the caller can go on from what it wrote without reading it back.
Committed = dict[DocPath, "Versioned[Any]"]


@dataclass(frozen=True)
class NewObject:
    """An object to create (never overwrite) in Cloud Storage."""

    uri: str
    data: bytes
    content_type: str = "application/json"
    # An inline attempt's input.json: the function that wrote it may run the attempt at once (DESIGN §16).
    chain: bool = False


@dataclass
class Effects:
    """What follows a commit: idempotent, so a replay after a crash performs them again safely."""

    events: list[LifecycleEvent] = field(default_factory=list)
    objects: list[NewObject] = field(default_factory=list)
