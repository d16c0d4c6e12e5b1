"""What a pure transition asks the store to write: documents by path, each with how it may be written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.documents import Document

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


def org_path(org: str) -> DocPath:
    return ("orgs", org)


@dataclass(frozen=True)
class Write:
    """`create` fails if the document exists; `replace` fails if it changed since `read_at`; `upsert` never fails.

    A commit is all-or-nothing, so a create or a stale replace is the dedupe and the lock of every stage.
    """

    path: DocPath
    doc: Document
    mode: Literal["create", "replace", "upsert"]
    read_at: datetime | None = None
