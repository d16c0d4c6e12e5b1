"""In-memory implementations of the ports, and FakeWorld, the pipeline wired to them, for unit tests.

The fakes honour the real adapters' semantics:

- the run store commits all-or-nothing; `create` fails if the document exists, `replace` if it is gone or its
  update_time differs from the one read, `upsert` never; a failed precondition raises store.ports.Conflict; every
  document a commit writes gets that commit's update_time, and documents are stored as Firestore would store them
  (their `to_firestore()` dict, read back through the model);
- the object store writes create-only with a new generation per version, reads pinned to a generation, and
  raises ObjectConflict / ObjectMissing / ObjectTooLarge where Cloud Storage would.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from flask import Flask, Request

from deploy.provision import seed_demo
from functions.operations import Operations
from functions.pipeline import Pipeline
from functions.stage import StageContext
from functions.workflows import Workflows
from jobs.launchers.base import ExecutionState, LauncherBusy, LaunchResult
from jobs.launchers.inline import InlineLauncher
from jobs.runtime import Assignment
from schemas.changes import (
    Committed,
    D,
    DocPath,
    Versioned,
    Write,
    api_key_path,
    attempt_path,
    idempotency_path,
    member_path,
    org_path,
    receipt_path,
    run_path,
    step_path,
    user_path,
    workflow_path,
    workflow_version_path,
)
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
from schemas.enums import AttemptState, JobStatus, ReceiptStatus, RunStatus
from schemas.lifecycle import LifecycleEvent
from schemas.objects import ObjectFinalized
from schemas.paths import IDEMPOTENCY_METADATA_KEY, gs_uri, parse_gs_uri
from schemas.settings import Settings
from store.ports import (
    Conflict,
    Found,
    ObjectConflict,
    ObjectMissing,
    ObjectTooLarge,
    Page,
    RunReads,
    StoredObject,
    SubmissionDocs,
    one_commit,
)
from tests.support import TEST_SIGNING_SECRET, TEST_WEB_SECRET_KEY, Driver
from web.accounts import Accounts
from web.app import create_app
from web.context import WebContext

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeRunStore:
    """The RunStore port in memory. `before_next_commit` runs a hook just before the next commit checks its
    preconditions, so a test can make a handler lose a race to a concurrent writer. `reads` and `writes` count
    document operations as Firestore would bill them."""

    def __init__(self) -> None:
        self._docs: dict[DocPath, tuple[dict, datetime]] = {}
        self._lock = threading.Lock()
        self._ticks = itertools.count(1)
        self._hooks: list[Callable[[], None]] = []
        self.commits = 0
        self.reads = 0
        self.writes = 0
        self.writes_by_path: Counter[DocPath] = Counter()

    def before_next_commit(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def _read(self, path: DocPath, model: type[D]) -> Versioned[D] | None:
        with self._lock:
            self.reads += 1
            found = self._docs.get(path)
        if found is None:
            return None
        data, update_time = found
        return Versioned(model.model_validate(copy.deepcopy(data)), update_time)

    def _doc(self, path: DocPath, model: type[D]) -> D | None:
        found = self._read(path, model)
        return found.doc if found else None

    def org(self, org: str) -> OrgDoc | None:
        return self._doc(org_path(org), OrgDoc)

    def workflow(self, org: str, slug: str) -> WorkflowDoc | None:
        return self._doc(workflow_path(org, slug), WorkflowDoc)

    def workflow_head(self, org: str, slug: str) -> Versioned[WorkflowDoc] | None:
        return self._read(workflow_path(org, slug), WorkflowDoc)

    def workflow_version(self, org: str, slug: str, version: int) -> WorkflowDoc | None:
        return self._doc(workflow_version_path(org, slug, version), WorkflowDoc)

    def workflows(self, org: str) -> list[WorkflowDoc]:
        found = self.collection("workflows")
        return sorted(
            (WorkflowDoc.model_validate(data) for data in found.values() if data["org"] == org), key=lambda w: w.slug
        )

    def run(self, run_id: str) -> Versioned[RunDoc] | None:
        return self._read(run_path(run_id), RunDoc)

    def attempt(self, run_id: str, attempt_id: str) -> Versioned[AttemptDoc] | None:
        return self._read(attempt_path(run_id, attempt_id), AttemptDoc)

    def step(self, run_id: str, step_number: int) -> StepDoc | None:
        return self._doc(step_path(run_id, step_number), StepDoc)

    def receipt(self, receipt_id: str) -> ReceiptDoc | None:
        return self._doc(receipt_path(receipt_id), ReceiptDoc)

    def submission_docs(self, run_id: str, org: str | None, slug: str | None) -> SubmissionDocs:
        return SubmissionDocs(
            run=self.run(run_id),
            org=self.org(org) if org is not None else None,
            workflow=self.workflow(org, slug) if org is not None and slug is not None else None,
        )

    def attempts_in(
        self,
        state: AttemptState,
        order_by: str,
        *,
        after: datetime | None = None,
        before: datetime | None = None,
        limit: int,
    ) -> list[Found[AttemptDoc]]:
        return self._found(
            lambda path: len(path) == 4 and path[2] == "attempts",
            AttemptDoc,
            order_by,
            {"state": str(state)},
            after=after,
            before=before,
            limit=limit,
        )

    def runs_due(
        self, order_by: str, *, before: datetime, status: RunStatus | None = None, limit: int
    ) -> list[Found[RunDoc]]:
        equal = {"status": str(status)} if status is not None else {}
        return self._found(
            lambda path: path[0] == "runs" and len(path) == 2, RunDoc, order_by, equal, before=before, limit=limit
        )

    def receipts_due(
        self, order_by: str, *, before: datetime, status: ReceiptStatus | None = None, limit: int
    ) -> list[Found[ReceiptDoc]]:
        equal = {"status": str(status)} if status is not None else {}
        return self._found(lambda path: path[0] == "receipts", ReceiptDoc, order_by, equal, before=before, limit=limit)

    def _found(
        self,
        wanted: Callable[[DocPath], bool],
        model: type[D],
        order_by: str,
        equal: dict[str, str],
        *,
        after: datetime | None = None,
        before: datetime | None = None,
        limit: int,
    ) -> list[Found[D]]:
        """As Firestore answers: documents lacking the field or holding null in it are not in the order."""
        with self._lock:
            matches = [
                (data[order_by], path, data, update_time)
                for path, (data, update_time) in self._docs.items()
                if wanted(path)
                and all(data.get(key) == value for key, value in equal.items())
                and data.get(order_by) is not None
                and (after is None or data[order_by] >= after)
                and (before is None or data[order_by] < before)
            ]
            matches.sort(key=lambda match: match[0])
            self.reads += min(len(matches), limit)
            return [
                Found(path, Versioned(model.model_validate(copy.deepcopy(data)), update_time))
                for _, path, data, update_time in matches[:limit]
            ]

    def delete(self, path: DocPath, read_at: datetime) -> bool:
        with self._lock:
            found = self._docs.get(path)
            if found is None or found[1] != read_at:
                return False
            del self._docs[path]
            self.writes += 1
            return True

    def commit(self, writes: Iterable[Write]) -> Committed:
        planned = one_commit(writes)
        if not planned:
            return {}
        while self._hooks:
            self._hooks.pop(0)()
        with self._lock:
            for write in planned:
                existing = self._docs.get(write.path)
                if write.mode == "create" and existing is not None:
                    raise Conflict(f"{'/'.join(write.path)} already exists")
                if write.mode == "replace" and (existing is None or existing[1] != write.read_at):
                    raise Conflict(f"{'/'.join(write.path)} changed since it was read")
            update_time = EPOCH + timedelta(microseconds=next(self._ticks))
            for write in planned:
                self._docs[write.path] = (copy.deepcopy(write.doc.to_firestore()), update_time)
                self.writes_by_path[write.path] += 1
            self.commits += 1
            self.writes += len(planned)
        return {write.path: Versioned(write.doc, update_time) for write in planned}

    def collection(self, *path: str) -> dict[str, dict]:
        """The documents directly under a collection path, by id: what a test inspects."""
        with self._lock:
            return {
                doc_path[-1]: copy.deepcopy(data) for doc_path, (data, _) in self._docs.items() if doc_path[:-1] == path
            }


def _page(ordered: list[tuple[str, D]], after: str | None, limit: int) -> Page[D]:
    """Firestore's cursor semantics: start after the document `after`; none at all when it does not exist."""
    ids = [doc_id for doc_id, _ in ordered]
    if after is not None and after not in ids:
        return Page([], None)
    start = ids.index(after) + 1 if after is not None else 0
    items = ordered[start : start + limit]
    return Page(items, items[-1][0] if start + limit < len(ordered) else None)


class FakeAccountStore(FakeRunStore):
    """The AccountStore port in memory, with the run store's commit semantics (one instance may serve both)."""

    def user(self, user_id: str) -> Versioned[UserDoc] | None:
        return self._read(user_path(user_id), UserDoc)

    def member(self, org: str, user_id: str) -> MemberDoc | None:
        return self._doc(member_path(org, user_id), MemberDoc)

    def api_key(self, key_hash: str) -> Versioned[ApiKeyDoc] | None:
        return self._read(api_key_path(key_hash), ApiKeyDoc)

    def api_keys(self, org: str) -> list[tuple[str, ApiKeyDoc]]:
        keys = [(h, ApiKeyDoc.model_validate(d)) for h, d in self.collection("api_keys").items()]
        return sorted((k for k in keys if k[1].org == org), key=lambda k: k[1].created_at)

    def idempotency(self, record_id: str) -> Versioned[IdempotencyDoc] | None:
        return self._read(idempotency_path(record_id), IdempotencyDoc)


@dataclass
class FakeRunReads:
    """The RunReads port over a FakeRunStore's documents."""

    store: FakeRunStore

    def run(self, run_id: str) -> RunDoc | None:
        found = self.store.run(run_id)
        return found.doc if found else None

    def runs_page(
        self, org: str, *, status: RunStatus | None, workflow: str | None, after: str | None, limit: int
    ) -> Page[RunDoc]:
        runs = [(run_id, RunDoc.model_validate(data)) for run_id, data in self.store.collection("runs").items()]
        chosen = [
            r
            for r in runs
            if r[1].org == org and status in (None, r[1].status) and workflow in (None, r[1].workflow_slug)
        ]
        return _page(sorted(chosen, key=lambda r: (r[1].created_at, r[0]), reverse=True), after, limit)

    def step(self, run_id: str, step_number: int) -> StepDoc | None:
        return self.store.step(run_id, step_number)

    def steps(self, run_id: str) -> list[StepDoc]:
        steps = [StepDoc.model_validate(d) for d in self.store.collection("runs", run_id, "steps").values()]
        return sorted(steps, key=lambda s: s.number)

    def findings(self, run_id: str, limit: int) -> list[FindingDoc]:
        findings = [FindingDoc.model_validate(d) for d in self.store.collection("runs", run_id, "findings").values()]
        return sorted(findings, key=lambda f: (f.step, f.index))[:limit]

    def findings_page(self, run_id: str, *, after: str | None, limit: int) -> Page[FindingDoc]:
        found = self.store.collection("runs", run_id, "findings").items()
        findings = [(finding_id, FindingDoc.model_validate(d)) for finding_id, d in found]
        return _page(sorted(findings, key=lambda f: (f[1].step, f[1].index)), after, limit)

    def rejected_receipts(self, run_id: str, limit: int) -> list[ReceiptDoc]:
        receipts = [ReceiptDoc.model_validate(d) for d in self.store.collection("receipts").values()]
        rejected = [r for r in receipts if r.run_id == run_id and r.status == ReceiptStatus.REJECTED]
        return sorted(rejected, key=lambda r: r.received_at, reverse=True)[:limit]


@dataclass(frozen=True)
class _Version:
    data: bytes
    generation: int
    content_type: str | None
    sha256: str | None
    signature: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class FakeObjectStore:
    """The ObjectStore port in memory. Like a bucket without versioning, only the live version of an object can be
    read (a pinned read of a replaced or deleted generation is ObjectMissing); every write is counted."""

    def __init__(self) -> None:
        self._versions: dict[str, list[_Version]] = {}
        self._live: dict[str, _Version] = {}
        self._generations = itertools.count(1_000_001)
        self._lock = threading.Lock()

    def _add(
        self,
        uri: str,
        data: bytes,
        content_type: str | None,
        sha256: str | None,
        *,
        if_generation: int | None,
        signature: str | None = None,
    ) -> _Version:
        """`if_generation` as GCS's ifGenerationMatch: 0 means create-only, None unconditional."""
        with self._lock:
            live = self._live.get(uri)
            if if_generation is not None and (live.generation if live else 0) != if_generation:
                raise ObjectConflict(uri)
            version = _Version(data, next(self._generations), content_type, sha256, signature)
            self._versions.setdefault(uri, []).append(version)
            self._live[uri] = version
            return version

    def upload(
        self, uri: str, data: bytes, content_type: str | None = "application/json", signature: str | None = None
    ) -> StoredObject:
        """What a user's upload does (not create-only): a new live version."""
        version = self._add(uri, data, content_type, None, if_generation=None, signature=signature)
        return StoredObject(uri, version.generation, len(data), None, signature)

    def upload_stream(
        self, uri: str, source: BinaryIO, content_type: str, metadata: dict[str, str] | None = None
    ) -> StoredObject:
        data = source.read()
        with self._lock:
            version = _Version(data, next(self._generations), content_type, None, metadata=dict(metadata or {}))
            self._versions.setdefault(uri, []).append(version)
            self._live[uri] = version
        return self.stat(uri, version.generation)  # type: ignore[return-value]

    def delete(self, uri: str, generation: int | None = None) -> None:
        with self._lock:
            live = self._live.get(uri)
            if live is not None and generation in (None, live.generation):
                del self._live[uri]

    def copy_version(
        self, uri: str, generation: int, dest_uri: str, metadata: dict[str, str], content_type: str | None
    ) -> StoredObject:
        source = self._version(uri, generation)
        with self._lock:
            version = _Version(source.data, next(self._generations), content_type, None, metadata=metadata)
            self._versions.setdefault(dest_uri, []).append(version)
            self._live[dest_uri] = version
        return StoredObject(dest_uri, version.generation, len(source.data), None)

    def uris_under(self, prefix_uri: str) -> list[str]:
        with self._lock:
            return sorted(uri for uri in self._live if uri.startswith(prefix_uri))

    def metadata(self, uri: str) -> dict[str, str]:
        """The live version's custom metadata, as a finalize notification carries it."""
        with self._lock:
            return dict(self._live[uri].metadata)

    def generations_written(self, uri: str) -> int:
        with self._lock:
            return len(self._versions.get(uri, []))

    def write_new(self, uri: str, data: bytes, content_type: str, signature: str | None = None) -> StoredObject:
        sha256 = hashlib.sha256(data).hexdigest()
        version = self._add(uri, data, content_type, sha256, if_generation=0, signature=signature)
        return StoredObject(uri, version.generation, len(data), sha256, signature)

    def replace_version(
        self, uri: str, data: bytes, content_type: str, *, generation: int, signature: str
    ) -> StoredObject:
        sha256 = hashlib.sha256(data).hexdigest()
        version = self._add(uri, data, content_type, sha256, if_generation=generation, signature=signature)
        return StoredObject(uri, version.generation, len(data), sha256, signature)

    def write_new_file(self, uri: str, path: Path, content_type: str | None, sha256: str) -> StoredObject:
        data = path.read_bytes()
        version = self._add(uri, data, content_type, sha256, if_generation=0)
        return StoredObject(uri, version.generation, len(data), sha256)

    def stat(self, uri: str, generation: int | None = None) -> StoredObject | None:
        try:
            version = self._version(uri, generation)
        except ObjectMissing:
            return None
        return StoredObject(
            uri,
            version.generation,
            len(version.data),
            version.sha256,
            version.signature,
            version.metadata.get(IDEMPOTENCY_METADATA_KEY),
        )

    def _version(self, uri: str, generation: int | None) -> _Version:
        with self._lock:
            if generation is None:
                found = self._live.get(uri)
            else:
                live = self._live.get(uri)
                found = live if live is not None and live.generation == generation else None
        if found is None:
            raise ObjectMissing(f"{uri} (generation {generation})")
        return found

    def stream(self, uri: str, generation: int | None = None, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        data = self._version(uri, generation).data
        return iter([data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)])

    def read_bytes(self, uri: str, generation: int | None, max_bytes: int) -> bytes:
        data = self._version(uri, generation).data
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"{uri} is larger than {max_bytes} bytes")
        return data

    def download_hashed(self, uri: str, generation: int, dest: Path, max_bytes: int) -> tuple[int, str]:
        data = self._version(uri, generation).data
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"more than {max_bytes} bytes")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return len(data), hashlib.sha256(data).hexdigest()


class Crash(Exception):
    """A fault injected into a fake: the process 'dies' here, as far as the handler is concerned."""


@dataclass
class RecordingPublisher:
    """The Publisher port: keeps what was published, in order. `crash_next_publish()` makes the next publish raise
    before sending anything: a handler that dies after its commit and before its effects."""

    events: list[LifecycleEvent] = field(default_factory=list)
    crashes: int = 0

    def crash_next_publish(self) -> None:
        self.crashes += 1

    def publish(self, events: Iterable[LifecycleEvent]) -> None:
        if self.crashes:
            self.crashes -= 1
            raise Crash("publish")
        self.events.extend(events)

    def types(self, run_id: str) -> list[str]:
        return [str(e.type) for e in self.events if e.data.run_id == run_id]


@dataclass
class ScriptedLauncher:
    """A job launcher that starts nothing: it answers with `result`, or raises `error`, and records each launch."""

    name: str = "local"
    result: LaunchResult = field(default_factory=lambda: LaunchResult("local/4242", None))
    error: Exception | None = None
    launched: list[Assignment] = field(default_factory=list)

    # What inspect() answers per execution name (RUNNING when not set), and what stop() was asked to stop.
    executions: dict[str, ExecutionState] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)

    # Launches it still has room for (None: no limit); past them it is busy, as a full local launcher is.
    capacity: int | None = None

    def launch(self, assignment: Assignment) -> LaunchResult:
        if self.error is not None:
            raise self.error
        if self.capacity is not None:
            if self.capacity == 0:
                raise LauncherBusy("no free slot")
            self.capacity -= 1
        self.launched.append(assignment)
        return self.result

    def inspect(self, execution_name: str) -> ExecutionState:
        return self.executions.get(execution_name, ExecutionState(JobStatus.RUNNING))

    def stop(self, execution_name: str) -> None:
        self.stopped.append(execution_name)


class ManualClock:
    """A clock a unit test moves by hand."""

    def __init__(self, start: datetime = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


BUCKET = "unit-bucket"
INBOX_BUCKET = "unit-inbox"


class FakeWorld(Driver):
    """The whole pipeline on the in-memory fakes: the real inline launcher and validators, a scripted job launcher,
    a manual clock, and the demo org seeded with the demo workflows (json-basic, energyplus-basic, fmu-basic)."""

    def __init__(self, **settings: Any) -> None:
        self.fake_store = FakeAccountStore()
        self.objects = FakeObjectStore()
        self.publisher = RecordingPublisher()
        self.clock = ManualClock()
        self.job_launcher = ScriptedLauncher()
        self.reads: RunReads = FakeRunReads(self.fake_store)
        config = Settings(
            **{
                "bucket": BUCKET,
                "inbox_bucket": INBOX_BUCKET,
                "signing_secret": TEST_SIGNING_SECRET,
                "web_secret_key": TEST_WEB_SECRET_KEY,
                # Most tests deliver each event themselves; the chain's own tests turn it on.
                "inline_chain": False,
                **settings,
            }
        )
        self.pipeline = Pipeline.wired(
            StageContext(
                settings=config,
                store=self.fake_store,
                objects=self.objects,
                publisher=self.publisher,
                launchers={"inline": InlineLauncher(self.objects, config), "local": self.job_launcher},
                clock=self.clock,
            )
        )
        # The demo workflows as `validibot up` applies them, resource files and all.
        seed_demo(self.fake_store, Workflows(self.pipeline.context))

    def upload(
        self,
        name: str,
        data: bytes,
        content_type: str = "application/json",
        *,
        bucket: str | None = None,
        signature: str | None = None,
    ) -> ObjectFinalized:
        bucket = bucket or self.bucket_for(name)
        stored = self.objects.upload(gs_uri(bucket, name), data, content_type, signature)
        return ObjectFinalized(
            bucket=bucket, name=name, generation=stored.generation, size=len(data), content_type=content_type
        )

    def event_for(self, uri: str) -> ObjectFinalized:
        found = self.objects.stat(uri)
        assert found is not None, f"{uri} was not written"
        bucket, name = parse_gs_uri(uri)
        return ObjectFinalized(
            bucket=bucket,
            name=name,
            generation=found.generation,
            size=found.size,
            metadata=self.objects.metadata(uri),
        )


def web_app(
    world: FakeWorld,
    clock: Callable[[], datetime] | None = None,
    iap_email: Callable[[Request], str | None] | None = None,
) -> Flask:
    """The web over a FakeWorld's ports: its pipeline's operations, its documents, its objects (and, given
    `iap_email`, behind Identity-Aware Proxy)."""
    context = world.pipeline.context
    accounts = Accounts(world.fake_store, context.settings, clock or world.clock)
    return create_app(
        WebContext(
            settings=context.settings,
            reads=world.reads,
            objects=world.objects,
            store=world.fake_store,
            accounts=accounts,
            operations=Operations(context),
            workflows=Workflows(context),
            iap_email=iap_email,
        )
    )
