"""Firestore run store: typed reads, and all-or-nothing commits of the writes a transition planned."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore

from schemas.changes import (
    DocPath,
    Write,
    attempt_path,
    org_path,
    receipt_path,
    run_path,
    step_path,
    workflow_path,
)
from schemas.documents import (
    AttemptDoc,
    Document,
    FindingDoc,
    OrgDoc,
    ReceiptDoc,
    RunDoc,
    StepDoc,
    WorkflowDoc,
)

D = TypeVar("D", bound=Document)

# Firestore's own limit on writes in one commit.
MAX_WRITES_PER_COMMIT = 500


class Conflict(Exception):
    """The commit lost a race: a document it creates exists, or one it replaces changed since it was read."""


@dataclass(frozen=True)
class Versioned(Generic[D]):
    doc: D
    update_time: datetime


class RunStore:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def _ref(self, path: DocPath) -> firestore.DocumentReference:
        return self._db.document(*path)

    def _get(self, path: DocPath, model: type[D]) -> Versioned[D] | None:
        snapshot = self._ref(path).get()
        if not snapshot.exists:
            return None
        return Versioned(model.model_validate(snapshot.to_dict()), snapshot.update_time)

    def org(self, org: str) -> OrgDoc | None:
        found = self._get(org_path(org), OrgDoc)
        return found.doc if found else None

    def workflow(self, org: str, slug: str) -> WorkflowDoc | None:
        found = self._get(workflow_path(org, slug), WorkflowDoc)
        return found.doc if found else None

    def run(self, run_id: str) -> Versioned[RunDoc] | None:
        return self._get(run_path(run_id), RunDoc)

    def attempt(self, run_id: str, attempt_id: str) -> Versioned[AttemptDoc] | None:
        return self._get(attempt_path(run_id, attempt_id), AttemptDoc)

    def step(self, run_id: str, step_number: int) -> StepDoc | None:
        found = self._get(step_path(run_id, step_number), StepDoc)
        return found.doc if found else None

    def receipt(self, receipt_id: str) -> ReceiptDoc | None:
        found = self._get(receipt_path(receipt_id), ReceiptDoc)
        return found.doc if found else None

    def steps(self, run_id: str) -> list[StepDoc]:
        docs = self._ref(run_path(run_id)).collection("steps").order_by("number").stream()
        return [StepDoc.model_validate(d.to_dict()) for d in docs]

    def findings(self, run_id: str, limit: int) -> list[FindingDoc]:
        query = self._ref(run_path(run_id)).collection("findings").order_by("step").order_by("index").limit(limit)
        return [FindingDoc.model_validate(d.to_dict()) for d in query.stream()]

    def rejected_receipts(self, run_id: str, limit: int) -> list[ReceiptDoc]:
        query = self._db.collection("receipts").where(filter=firestore.FieldFilter("run_id", "==", run_id))
        receipts = [ReceiptDoc.model_validate(d.to_dict()) for d in query.limit(limit).stream()]
        return [r for r in receipts if r.status == "REJECTED"]

    def runs_for_org(self, org: str, limit: int) -> list[tuple[str, RunDoc]]:
        query = (
            self._db.collection("runs")
            .where(filter=firestore.FieldFilter("org", "==", org))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return [(d.id, RunDoc.model_validate(d.to_dict())) for d in query.stream()]

    def commit(self, writes: Iterable[Write]) -> None:
        """Apply every write or none; raise Conflict when a precondition fails."""
        writes = list(writes)
        if not writes:
            return
        if len(writes) > MAX_WRITES_PER_COMMIT:
            raise ValueError(f"{len(writes)} writes exceed Firestore's {MAX_WRITES_PER_COMMIT} per commit")
        batch = self._db.batch()
        for write in writes:
            ref, data = self._ref(write.path), write.doc.to_firestore()
            if write.mode == "create":
                batch.create(ref, data)
            elif write.mode == "upsert":
                batch.set(ref, data)
            else:
                batch.update(ref, data, option=self._db.write_option(last_update_time=write.read_at))
        try:
            batch.commit()
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound) as exc:
            raise Conflict(str(exc)) from exc
