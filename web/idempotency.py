"""Idempotency-Key on submissions: the same key and body replay the first request's run; another body is refused.

A record is created (create-only, so two concurrent first requests cannot both upload) before the upload and given
the run id after it. A record left without a run (its request died mid-upload) may be taken over once it is
`idempotency_stale_seconds` old (longer than any client waits for an answer, so a slow first request is never taken
over while it may still upload); until then a retry is told the first request is still in progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.access import idempotency_record_id
from schemas.api import IDEMPOTENCY_IN_PROGRESS
from schemas.changes import DocPath, Versioned, Write, idempotency_path
from schemas.documents import IdempotencyDoc
from store.ports import AccountStore, Conflict
from web.context import web_context
from web.problems import ApiProblem

TRIES = 3


@dataclass(frozen=True)
class Replay:
    run_id: str


@dataclass(frozen=True)
class Proceed:
    """Make the run under this record: create it, or take over a stale one (read at `read_at`)."""

    read_at: datetime | None


def decide(
    found: Versioned[IdempotencyDoc] | None, request_sha256: str, now: datetime, stale_after: timedelta
) -> Replay | Proceed:
    """What a request with an Idempotency-Key does, given the record found under it: pure, ApiProblem to refuse."""
    if found is None:
        return Proceed(None)
    if found.doc.request_sha256 != request_sha256:
        raise ApiProblem(
            422, "This Idempotency-Key was used with another request body; use a new key for a new submission."
        )
    if found.doc.run_id is not None:
        return Replay(found.doc.run_id)
    if now - found.doc.created_at < stale_after:
        raise ApiProblem(
            409,
            "A request with this Idempotency-Key is still in progress; retry in a moment.",
            problem_type=IDEMPOTENCY_IN_PROGRESS,
        )
    return Proceed(found.update_time)


def _record_run(store: AccountStore, path: DocPath, done: IdempotencyDoc, read_at: datetime) -> None:
    """The run goes on the record whatever else wrote it meanwhile (a stale takeover): the upload happened, and
    a replay must find it. Tried again on a fresh read until it lands."""
    for _ in range(TRIES):
        try:
            store.commit([Write(path, done, "replace", read_at)])
            return
        except Conflict:
            found = store.idempotency(path[-1])
            if found is None:
                store.commit([Write(path, done, "create")])
                return
            read_at = found.update_time
    raise RuntimeError("the Idempotency-Key record kept changing; its run was made")


def idempotent_submission(
    key_hash: str,
    org: str,
    idempotency_key: str | None,
    request_sha256: str,
    make_run: Callable[[str | None], str],
    landed: Callable[[str], str | None],
) -> tuple[str, bool]:
    """The run for this request and whether it is a replay. `make_run(record_id)` uploads, tagged with the record;
    `landed(record_id)` finds the run of an upload so tagged that is still live, which a takeover answers with
    instead of uploading again."""
    if idempotency_key is None:
        return make_run(None), False
    if not idempotency_key.strip() or not idempotency_key.isprintable():
        raise ApiProblem(422, "The Idempotency-Key header must be 1 to 255 printable characters.")
    ctx = web_context()
    store, settings = ctx.accounts.store, ctx.settings
    path = idempotency_path(idempotency_record_id(key_hash, idempotency_key))
    for _ in range(TRIES):
        found = store.idempotency(path[-1])
        now = ctx.accounts.clock()
        decision = decide(found, request_sha256, now, timedelta(seconds=settings.idempotency_stale_seconds))
        if isinstance(decision, Replay):
            return decision.run_id, True
        record = IdempotencyDoc(
            org=org,
            request_sha256=request_sha256,
            created_at=now,
            expires_at=now + timedelta(hours=settings.idempotency_hours),
        )
        mode = "create" if decision.read_at is None else "replace"
        try:
            claimed = store.commit([Write(path, record, mode, decision.read_at)])
        except Conflict:
            continue  # another request with this key got there first: read what it wrote
        earlier = landed(path[-1]) if decision.read_at is not None else None
        if earlier is not None:
            # The request taken over died after its upload landed: its run is this request's.
            _record_run(store, path, record.model_copy(update={"run_id": earlier}), claimed[path].update_time)
            return earlier, True
        try:
            run_id = make_run(path[-1])
        except ApiProblem:
            # Refused before anything was uploaded (its name, size, workflow): a retry may try again at once. Any
            # other failure may come after the upload landed, so the record stays until it is stale.
            store.delete(path, claimed[path].update_time)
            raise
        _record_run(store, path, record.model_copy(update={"run_id": run_id}), claimed[path].update_time)
        return run_id, False
    raise ApiProblem(409, "Requests with this Idempotency-Key keep racing; retry in a moment.")
