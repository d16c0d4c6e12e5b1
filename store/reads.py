"""Firestore adapter of the RunReads port: the queries people's pages and commands make (deploy/firestore.indexes.json
holds the composite indexes they need in production)."""

from __future__ import annotations

from google.cloud import firestore

from schemas.changes import D, run_path, step_path
from schemas.documents import FindingDoc, ReceiptDoc, RunDoc, StepDoc
from schemas.enums import ReceiptStatus, RunStatus
from store.ports import Page
from store.runs import read_doc


def _page(
    query: firestore.Query,
    collection: firestore.CollectionReference,
    after: str | None,
    limit: int,
    model: type[D],
    org: str | None = None,
) -> Page[D]:
    """One page of `query`, starting after the document `after` of `collection` (its snapshot positions the cursor
    on every ordered field). A cursor that does not exist, or (given `org`) is another org's document, starts
    nowhere: an empty page, so a cursor tells nothing about what another org has."""
    if after is not None:
        cursor = collection.document(after).get()
        if not cursor.exists or (org is not None and (cursor.to_dict() or {}).get("org") != org):
            return Page([], None)
        query = query.start_after(cursor)
    # One more than asked tells whether a next page exists without another query.
    docs = list(query.limit(limit + 1).stream())
    items = [(d.id, model.model_validate(d.to_dict())) for d in docs[:limit]]
    return Page(items, items[-1][0] if len(docs) > limit else None)


class FirestoreRunReads:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def run(self, run_id: str) -> RunDoc | None:
        return read_doc(self._db, run_path(run_id), RunDoc)

    def runs_page(
        self, org: str, *, status: RunStatus | None, workflow: str | None, after: str | None, limit: int
    ) -> Page[RunDoc]:
        runs = self._db.collection("runs")
        query = runs.where(filter=firestore.FieldFilter("org", "==", org))
        if status is not None:
            query = query.where(filter=firestore.FieldFilter("status", "==", status.value))
        if workflow is not None:
            query = query.where(filter=firestore.FieldFilter("workflow_slug", "==", workflow))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            "__name__", direction=firestore.Query.DESCENDING
        )
        return _page(query, runs, after, limit, RunDoc, org=org)

    def findings_page(self, run_id: str, *, after: str | None, limit: int) -> Page[FindingDoc]:
        findings = self._db.document(*run_path(run_id)).collection("findings")
        return _page(findings.order_by("step").order_by("index"), findings, after, limit, FindingDoc)

    def step(self, run_id: str, step_number: int) -> StepDoc | None:
        return read_doc(self._db, step_path(run_id, step_number), StepDoc)

    def steps(self, run_id: str) -> list[StepDoc]:
        docs = self._db.document(*run_path(run_id)).collection("steps").order_by("number").stream()
        return [StepDoc.model_validate(d.to_dict()) for d in docs]

    def findings(self, run_id: str, limit: int) -> list[FindingDoc]:
        findings = self._db.document(*run_path(run_id)).collection("findings")
        query = findings.order_by("step").order_by("index").limit(limit)
        return [FindingDoc.model_validate(d.to_dict()) for d in query.stream()]

    def rejected_receipts(self, run_id: str, limit: int) -> list[ReceiptDoc]:
        """The newest rejected outputs of a run: filtered in the query, so applied receipts never crowd them out."""
        query = (
            self._db.collection("receipts")
            .where(filter=firestore.FieldFilter("run_id", "==", run_id))
            .where(filter=firestore.FieldFilter("status", "==", ReceiptStatus.REJECTED.value))
            .order_by("received_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return [ReceiptDoc.model_validate(d.to_dict()) for d in query.stream()]
