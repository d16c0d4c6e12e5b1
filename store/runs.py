"""Firestore adapter of the RunStore port: typed reads, and all-or-nothing commits of what a transition planned."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from schemas.changes import (
    Committed,
    D,
    DocPath,
    Versioned,
    Write,
    attempt_path,
    org_path,
    receipt_path,
    run_path,
    step_path,
    workflow_path,
    workflow_version_path,
)
from schemas.documents import AttemptDoc, OrgDoc, ReceiptDoc, RunDoc, StepDoc, WorkflowDoc
from schemas.enums import AttemptState, ReceiptStatus, RunStatus
from store.ports import Conflict, Found, SubmissionDocs, one_commit


def read_versioned(db: firestore.Client, path: DocPath, model: type[D]) -> Versioned[D] | None:
    snapshot = db.document(*path).get()
    if not snapshot.exists:
        return None
    return Versioned(model.model_validate(snapshot.to_dict()), snapshot.update_time)


def read_doc(db: firestore.Client, path: DocPath, model: type[D]) -> D | None:
    found = read_versioned(db, path, model)
    return found.doc if found else None


def delete_unchanged(db: firestore.Client, path: DocPath, read_at: datetime) -> bool:
    try:
        db.document(*path).delete(option=db.write_option(last_update_time=read_at))
    except (gexc.FailedPrecondition, gexc.NotFound):
        return False
    return True


def commit_writes(db: firestore.Client, writes: Iterable[Write]) -> Committed:
    """Apply every write or none; raise Conflict when a precondition fails (every Firestore store commits so)."""
    planned = one_commit(writes)
    if not planned:
        return {}
    batch = db.batch()
    for write in planned:
        ref, data = db.document(*write.path), write.doc.to_firestore()
        if write.mode == "create":
            batch.create(ref, data)
        elif write.mode == "upsert":
            batch.set(ref, data)
        else:
            batch.update(ref, data, option=db.write_option(last_update_time=write.read_at))
    try:
        results = batch.commit()
    except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound) as exc:
        raise Conflict(str(exc)) from exc
    # One result per write, in order: each the update time its document now has.
    return {
        write.path: Versioned(write.doc, result.update_time) for write, result in zip(planned, results, strict=True)
    }


class FirestoreRunStore:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def org(self, org: str) -> OrgDoc | None:
        return read_doc(self._db, org_path(org), OrgDoc)

    def workflow(self, org: str, slug: str) -> WorkflowDoc | None:
        return read_doc(self._db, workflow_path(org, slug), WorkflowDoc)

    def workflow_head(self, org: str, slug: str) -> Versioned[WorkflowDoc] | None:
        return read_versioned(self._db, workflow_path(org, slug), WorkflowDoc)

    def workflow_version(self, org: str, slug: str, version: int) -> WorkflowDoc | None:
        return read_doc(self._db, workflow_version_path(org, slug, version), WorkflowDoc)

    def workflows(self, org: str) -> list[WorkflowDoc]:
        query = self._db.collection("workflows").where(filter=FieldFilter("org", "==", org))
        return sorted((WorkflowDoc.model_validate(s.to_dict()) for s in query.stream()), key=lambda w: w.slug)

    def run(self, run_id: str) -> Versioned[RunDoc] | None:
        return read_versioned(self._db, run_path(run_id), RunDoc)

    def attempt(self, run_id: str, attempt_id: str) -> Versioned[AttemptDoc] | None:
        return read_versioned(self._db, attempt_path(run_id, attempt_id), AttemptDoc)

    def step(self, run_id: str, step_number: int) -> StepDoc | None:
        return read_doc(self._db, step_path(run_id, step_number), StepDoc)

    def receipt(self, receipt_id: str) -> ReceiptDoc | None:
        return read_doc(self._db, receipt_path(receipt_id), ReceiptDoc)

    def submission_docs(self, run_id: str, org: str | None, slug: str | None) -> SubmissionDocs:
        paths = [run_path(run_id)]
        if org is not None:
            paths.append(org_path(org))
            if slug is not None:
                paths.append(workflow_path(org, slug))
        snapshots = self._db.get_all([self._db.document(*path) for path in paths])
        found = {tuple(snapshot.reference.path.split("/")): snapshot for snapshot in snapshots if snapshot.exists}

        def versioned(path: DocPath, model: type[D]) -> Versioned[D] | None:
            snapshot = found.get(path)
            return Versioned(model.model_validate(snapshot.to_dict()), snapshot.update_time) if snapshot else None

        org_doc = versioned(org_path(org), OrgDoc) if org is not None else None
        workflow = versioned(workflow_path(org, slug), WorkflowDoc) if org is not None and slug is not None else None
        return SubmissionDocs(
            run=versioned(run_path(run_id), RunDoc),
            org=org_doc.doc if org_doc else None,
            workflow=workflow.doc if workflow else None,
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
        query = self._db.collection_group("attempts").where(filter=FieldFilter("state", "==", str(state)))
        return self._found(query, AttemptDoc, order_by, after=after, before=before, limit=limit)

    def runs_due(
        self, order_by: str, *, before: datetime, status: RunStatus | None = None, limit: int
    ) -> list[Found[RunDoc]]:
        query = self._db.collection("runs")
        if status is not None:
            query = query.where(filter=FieldFilter("status", "==", str(status)))
        return self._found(query, RunDoc, order_by, before=before, limit=limit)

    def receipts_due(
        self, order_by: str, *, before: datetime, status: ReceiptStatus | None = None, limit: int
    ) -> list[Found[ReceiptDoc]]:
        query = self._db.collection("receipts")
        if status is not None:
            query = query.where(filter=FieldFilter("status", "==", str(status)))
        return self._found(query, ReceiptDoc, order_by, before=before, limit=limit)

    def _found(
        self,
        query: Any,
        model: type[D],
        order_by: str,
        *,
        after: datetime | None = None,
        before: datetime | None = None,
        limit: int,
    ) -> list[Found[D]]:
        if after is not None:
            query = query.where(filter=FieldFilter(order_by, ">=", after))
        if before is not None:
            query = query.where(filter=FieldFilter(order_by, "<", before))
        return [
            Found(
                tuple(snapshot.reference.path.split("/")),
                Versioned(model.model_validate(snapshot.to_dict()), snapshot.update_time),
            )
            for snapshot in query.order_by(order_by).limit(limit).stream()
        ]

    def delete(self, path: DocPath, read_at: datetime) -> bool:
        return delete_unchanged(self._db, path, read_at)

    def commit(self, writes: Iterable[Write]) -> Committed:
        return commit_writes(self._db, writes)
