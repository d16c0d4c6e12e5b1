"""What every stage's handler shares: the ports it is given, how it reports what it did, and how it commits.

A handler loads documents, asks its transition for a Plan, commits it, then performs its effects. Returning
acknowledges the event; raising asks the platform to redeliver, which is right only for transient faults. Bad input
is recorded on the run (or as a rejected receipt) and acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol, TypeVar

from events.ports import Publisher
from functions.common import Plan
from jobs.launchers.base import Launcher
from schemas.changes import Committed, Effects, Versioned, attempt_path, run_path
from schemas.documents import AttemptDoc, RunDoc
from schemas.objects import ObjectFinalized
from schemas.paths import ObjectPath, StepObjectPath, parse_gs_uri, parse_object_name
from schemas.settings import Settings
from schemas.signing import SIGNATURE_METADATA_KEY
from store.ports import Conflict, ObjectConflict, ObjectStore, RunStore, StoredObject

log = logging.getLogger("validibot.pipeline")

# A commit that loses a race is re-planned from fresh reads; the second plan nearly always sees the winner.
MAX_COMMIT_TRIES = 4
MAX_REASON_CHARS = 600


class Outcome(StrEnum):
    """What a stage did with an event (its value is what the log line says)."""

    IGNORED = "ignored"
    CREATED = "created"
    REFUSED = "refused"
    DUPLICATE = "duplicate"
    EFFECTS_REPLAYED = "duplicate (effects replayed)"
    UNKNOWN_ATTEMPT = "unknown attempt"
    LAUNCHED = "launched"
    QUEUED = "queued (launcher full)"
    FAILED = "failed"
    APPLIED = "applied"
    REJECTED = "rejected"
    ALREADY_RECORDED = "duplicate (already recorded)"

    @property
    def is_duplicate(self) -> bool:
        return self in (Outcome.DUPLICATE, Outcome.EFFECTS_REPLAYED, Outcome.ALREADY_RECORDED)


@dataclass(frozen=True)
class Known:
    """What the call that wrote a step object knows of it: its exact bytes, and its run and attempt as that call
    committed them. The chain hands it on so the next stage need not read any of it back; every write the next
    stage makes is still conditioned on those update times, so a stale view only costs a re-read."""

    data: bytes
    run: Versioned[RunDoc] | None = None
    attempt: Versioned[AttemptDoc] | None = None


@dataclass(frozen=True)
class Chained:
    """An object this call just wrote, to be handled at once as its finalize event will be (DESIGN §16)."""

    event: ObjectFinalized
    known: Known


@dataclass(frozen=True)
class Handled:
    outcome: Outcome
    detail: str | None = None
    # Objects this handling wrote that the pipeline may handle at once, in this call (the inline chain).
    follow_up: tuple[Chained, ...] = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.outcome}: {self.detail}" if self.detail else str(self.outcome)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_callback_id() -> str:
    return secrets.token_urlsafe(32)


def finalized(stored: StoredObject, content_type: str | None) -> ObjectFinalized:
    """The finalize event the platform will deliver for an object this function just wrote."""
    bucket, name = parse_gs_uri(stored.uri)
    metadata = {SIGNATURE_METADATA_KEY: stored.signature} if stored.signature else {}
    return ObjectFinalized(
        bucket=bucket,
        name=name,
        generation=stored.generation,
        size=stored.size,
        content_type=content_type,
        metadata=metadata,
    )


def chain(stored: StoredObject, content_type: str | None, data: bytes, committed: Committed) -> Chained:
    """A step object just written, with its bytes and its run and attempt as `committed` holds them."""
    event = finalized(stored, content_type)
    path = parse_object_name(event.name)
    assert isinstance(path, StepObjectPath), "only step objects are chained"
    known = Known(
        data,
        run=committed.get(run_path(path.run_id)),
        attempt=committed.get(attempt_path(path.run_id, path.attempt_id)),
    )
    return Chained(event, known)


def short(exc: Exception) -> str:
    """An exception's text, short enough to record on a run for a person to read."""
    text = str(exc).strip()
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


@dataclass(frozen=True)
class StageContext:
    """The ports and policies every stage is built with (bootstrap wires the real ones, tests the fakes)."""

    settings: Settings
    store: RunStore
    objects: ObjectStore
    publisher: Publisher
    launchers: Mapping[str, Launcher]
    clock: Callable[[], datetime] = field(default=utcnow)
    new_callback_id: Callable[[], str] = field(default=new_callback_id)

    def perform(self, effects: Effects, committed: Committed | None = None) -> tuple[Chained, ...]:
        """Publish the events, write the objects; returns the objects written now that may be chained, with what
        `committed` (the commit these effects follow) says of their runs and attempts. An earlier delivery's
        objects are left to their own events."""
        self.publisher.publish(effects.events)
        chained = []
        for obj in effects.objects:
            # A conflict means an earlier delivery wrote it; LAUNCH checks its bytes against the attempt.
            with contextlib.suppress(ObjectConflict):
                stored = self.objects.write_new(obj.uri, obj.data, obj.content_type)
                if obj.chain:
                    chained.append(chain(stored, obj.content_type, obj.data, committed or {}))
        return tuple(chained)

    def commit_replanned(self, replan: Callable[[], Plan | None]) -> Plan | None:
        """Commit what `replan` decides from fresh reads, deciding again after a lost race; None: nothing done."""
        for _ in range(MAX_COMMIT_TRIES):
            plan = replan()
            if plan is None:
                return None
            try:
                self.store.commit(plan.writes)
            except Conflict:
                continue
            return plan
        return None


PathT = TypeVar("PathT", bound=ObjectPath, contravariant=True)


class Stage(Protocol[PathT]):
    """One stage of the pipeline: handles the finalize events of the objects routed to it."""

    def handle(self, event: ObjectFinalized, path: PathT, known: Known | None = None) -> Handled: ...
