"""The ports the pipeline talks to, as small Protocols, and the exceptions every implementation raises.

The Firestore and Cloud Storage adapters implement them for real; the in-memory fakes under tests/ implement the
same semantics for unit tests. Nothing here imports a Google client, so code that needs only the ports stays light.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Generic, Protocol

from schemas.changes import Committed, D, DocPath, Versioned, Write
from schemas.documents import (
    ApiKeyDoc,
    AttemptDoc,
    FindingDoc,
    IdempotencyDoc,
    MemberDoc,
    OrgDoc,
    ReceiptDoc,
    RunDoc,
    StepDoc,
    UserDoc,
    WorkflowDoc,
)
from schemas.enums import AttemptState, ReceiptStatus, RunStatus
from schemas.envelopes import FileRef

# Firestore's own limit on writes in one commit.
MAX_WRITES_PER_COMMIT = 500


class Conflict(Exception):
    """The commit lost a race: a document it creates exists, or one it replaces changed since it was read."""


class ObjectConflict(Exception):
    """A create-only write found the object already there."""


class ObjectMissing(Exception):
    """The object (at that generation) does not exist."""


class ObjectTooLarge(Exception):
    pass


class IntegrityError(Exception):
    """The bytes read are not the bytes the envelope promised."""


def one_commit(writes: Iterable[Write]) -> list[Write]:
    """The writes of one commit, refused as a whole past Firestore's limit (every RunStore keeps the same bound)."""
    batch = list(writes)
    if len(batch) > MAX_WRITES_PER_COMMIT:
        raise ValueError(f"{len(batch)} writes exceed Firestore's {MAX_WRITES_PER_COMMIT} per commit")
    return batch


@dataclass(frozen=True)
class StoredObject:
    uri: str
    generation: int
    size: int
    # Both as the writer put them into the object's metadata: claims, until the bytes are hashed.
    sha256: str | None
    signature: str | None = None
    # An API submission's Idempotency-Key record, as its upload tagged it.
    idempotency_record: str | None = None


@dataclass(frozen=True)
class Found(Generic[D]):
    """A document a maintenance query found: its path (which holds its run and attempt ids) and its version."""

    path: DocPath
    found: Versioned[D]

    @property
    def doc(self) -> D:
        return self.found.doc


@dataclass(frozen=True)
class SubmissionDocs:
    run: Versioned[RunDoc] | None
    org: OrgDoc | None
    workflow: WorkflowDoc | None


class RunStore(Protocol):
    """The pipeline's documents: typed reads, and all-or-nothing commits of what a transition planned."""

    def org(self, org: str) -> OrgDoc | None: ...

    def workflow(self, org: str, slug: str) -> WorkflowDoc | None: ...

    def workflow_head(self, org: str, slug: str) -> Versioned[WorkflowDoc] | None:
        """The current version, with the update time a new version is committed on."""
        ...

    def workflow_version(self, org: str, slug: str, version: int) -> WorkflowDoc | None: ...

    def workflows(self, org: str) -> list[WorkflowDoc]:
        """The org's workflows, current versions, by slug."""
        ...

    def run(self, run_id: str) -> Versioned[RunDoc] | None: ...

    def attempt(self, run_id: str, attempt_id: str) -> Versioned[AttemptDoc] | None: ...

    def step(self, run_id: str, step_number: int) -> StepDoc | None: ...

    def receipt(self, receipt_id: str) -> ReceiptDoc | None: ...

    def submission_docs(self, run_id: str, org: str | None, slug: str | None) -> SubmissionDocs:
        """The run an upload would create, its org and its workflow, in one round trip (INTAKE's hot path).
        `org` None skips the org and the workflow, `slug` None the workflow: ids not fit to be document ids."""
        ...

    def attempts_in(
        self,
        state: AttemptState,
        order_by: str,
        *,
        after: datetime | None = None,
        before: datetime | None = None,
        limit: int,
    ) -> list[Found[AttemptDoc]]:
        """Attempts of every run in `state` whose `order_by` field lies in [after, before), oldest first."""
        ...

    def runs_due(
        self, order_by: str, *, before: datetime, status: RunStatus | None = None, limit: int
    ) -> list[Found[RunDoc]]:
        """Runs (in `status`, if given) whose `order_by` field is before `before`, oldest first."""
        ...

    def receipts_due(
        self, order_by: str, *, before: datetime, status: ReceiptStatus | None = None, limit: int
    ) -> list[Found[ReceiptDoc]]:
        """Receipts (in `status`, if given) whose `order_by` field is before `before`, oldest first."""
        ...

    def delete(self, path: DocPath, read_at: datetime) -> bool:
        """Delete the document if it has not changed since it was read; False when it changed or is gone."""
        ...

    def commit(self, writes: Iterable[Write]) -> Committed:
        """Apply every write or none: `create` fails if the document exists, `replace` if it changed since it was
        read (or is gone), `upsert` never; raise Conflict when a precondition fails. Returns what was written."""
        ...


class AccountStore(Protocol):
    """People, their memberships, API keys and Idempotency-Key records (DESIGN §14): keyed reads and the same
    all-or-nothing commits as the run store."""

    def user(self, user_id: str) -> Versioned[UserDoc] | None: ...

    def member(self, org: str, user_id: str) -> MemberDoc | None: ...

    def api_key(self, key_hash: str) -> Versioned[ApiKeyDoc] | None: ...

    def api_keys(self, org: str) -> list[tuple[str, ApiKeyDoc]]:
        """The org's keys (revoked ones too), oldest first, each with its hash."""
        ...

    def idempotency(self, record_id: str) -> Versioned[IdempotencyDoc] | None: ...

    def delete(self, path: DocPath, read_at: datetime) -> bool:
        """As RunStore.delete: only if unchanged since it was read."""
        ...

    def commit(self, writes: Iterable[Write]) -> Committed: ...


@dataclass(frozen=True)
class Page(Generic[D]):
    """One page of a listing, each document with its id; `next_after` is the id the next page starts after."""

    items: list[tuple[str, D]]
    next_after: str | None


class RunReads(Protocol):
    """What people look at: the dashboard's and the CLI's queries, apart from the pipeline's own reads."""

    def run(self, run_id: str) -> RunDoc | None: ...

    def runs_page(
        self, org: str, *, status: RunStatus | None, workflow: str | None, after: str | None, limit: int
    ) -> Page[RunDoc]:
        """The org's runs newest first, optionally of one status and workflow, starting after run `after`."""
        ...

    def step(self, run_id: str, step_number: int) -> StepDoc | None: ...

    def steps(self, run_id: str) -> list[StepDoc]: ...

    def findings_page(self, run_id: str, *, after: str | None, limit: int) -> Page[FindingDoc]:
        """A run's findings by step and index, starting after finding `after`."""
        ...

    def findings(self, run_id: str, limit: int) -> list[FindingDoc]: ...

    def rejected_receipts(self, run_id: str, limit: int) -> list[ReceiptDoc]: ...


class RunWatch(Protocol):
    """Being told when a run changes: what a live run page streams to the browser."""

    def watch(self, run_id: str, changed: Callable[[], None], limit: int) -> Callable[[], None] | None:
        """Call `changed` (from another thread) when the run or any of its steps changes, and once at the start;
        returns the function that stops watching (idempotent), or None when `limit` watches are open already."""
        ...

    @property
    def watching(self) -> int:
        """Watches open now, in this process."""
        ...


class ObjectStore(Protocol):
    """Payloads: create-only writes, and reads pinned to a generation and checked for size and sha256."""

    def write_new(self, uri: str, data: bytes, content_type: str, signature: str | None = None) -> StoredObject:
        """Create `uri` with `data`; raise ObjectConflict if it exists. Never overwrites."""
        ...

    def replace_version(
        self, uri: str, data: bytes, content_type: str, *, generation: int, signature: str
    ) -> StoredObject:
        """Overwrite exactly `generation` of `uri` (a forgery found in a signed output's place); ObjectConflict if
        the live version is another one."""
        ...

    def write_new_file(self, uri: str, path: Path, content_type: str | None, sha256: str) -> StoredObject: ...

    def upload_stream(
        self, uri: str, source: BinaryIO, content_type: str, metadata: dict[str, str] | None = None
    ) -> StoredObject:
        """What a user's upload does: a new live version of `uri` (the inbox, which users overwrite as they please;
        not create-only), read from `source`, carrying `metadata`."""
        ...

    def stat(self, uri: str, generation: int | None = None) -> StoredObject | None:
        """The live version (or exactly `generation`), None when there is no such version."""
        ...

    def copy_version(
        self, uri: str, generation: int, dest_uri: str, metadata: dict[str, str], content_type: str | None
    ) -> StoredObject:
        """Copy exactly `generation` of `uri` to a new version of `dest_uri` carrying `metadata` (a re-run's
        upload to the inbox, which users overwrite as they please: not create-only)."""
        ...

    def delete(self, uri: str, generation: int | None = None) -> None:
        """Delete the live version (or exactly `generation`); nothing to do when there is none (retention, which
        may run twice)."""
        ...

    def uris_under(self, prefix_uri: str) -> list[str]:
        """Every live object whose uri starts with `prefix_uri`."""
        ...

    def stream(self, uri: str, generation: int | None = None, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The object (the live version, or exactly `generation`) in chunks; ObjectMissing (raised before the first
        chunk) when there is none."""
        ...

    def read_bytes(self, uri: str, generation: int | None, max_bytes: int) -> bytes:
        """The bytes of exactly that generation (None: the live one); ObjectTooLarge past `max_bytes`."""
        ...

    def download_hashed(self, uri: str, generation: int, dest: Path, max_bytes: int) -> tuple[int, str]:
        """Stream one generation to `dest` (renamed into place only when complete); return size and sha256."""
        ...


def streamed_sha256(objects: ObjectStore, uri: str, generation: int) -> str:
    """The sha256 of one version's bytes, however large, without holding them."""
    digest = hashlib.sha256()
    for chunk in objects.stream(uri, generation):
        digest.update(chunk)
    return digest.hexdigest()


def download_verified(objects: ObjectStore, ref: FileRef, dest: Path) -> Path:
    """Fetch the file an envelope names, refusing any byte that differs from what it promised."""
    if ref.generation is None:
        raise IntegrityError(f"{ref.uri} is not pinned to a generation")
    try:
        size, sha256 = objects.download_hashed(ref.uri, ref.generation, dest, max_bytes=ref.size_bytes)
    except ObjectTooLarge as exc:
        raise IntegrityError(f"{ref.name} is larger than the {ref.size_bytes} bytes recorded") from exc
    if size != ref.size_bytes or sha256 != ref.sha256:
        dest.unlink()
        raise IntegrityError(
            f"{ref.name} does not match what was recorded (size {size} vs {ref.size_bytes}, "
            f"sha256 {sha256[:12]}… vs {ref.sha256[:12]}…)"
        )
    return dest
