"""Firestore adapter of the RunReads port: the queries people's pages and commands make (deploy/firestore.indexes.json
holds the composite indexes they need in production)."""

from __future__ import annotations

from google.cloud import firestore

from schemas.changes import run_path, step_path
from schemas.documents import FindingDoc, ReceiptDoc, RunDoc, StepDoc
from schemas.enums import ReceiptStatus
from store.runs import read_doc


class FirestoreRunReads:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    def run(self, run_id: str) -> RunDoc | None:
        return read_doc(self._db, run_path(run_id), RunDoc)

    def runs_for_org(self, org: str, limit: int) -> list[tuple[str, RunDoc]]:
        query = (
            self._db.collection("runs")
            .where(filter=firestore.FieldFilter("org", "==", org))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return [(d.id, RunDoc.model_validate(d.to_dict())) for d in query.stream()]

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
