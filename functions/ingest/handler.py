"""INGEST: an output.json finalized → verified against its attempt, applied exactly once, then the next step or the
run's end. The receipt under the output's callback_id is the dedupe."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

from functions.common import PendingReceipt, Plan, ScheduledAttempt
from functions.ingest.transitions import ingest_effects, plan_ingest, reject
from functions.stage import MAX_COMMIT_TRIES, Handled, Outcome, StageContext, short
from schemas.changes import Write, receipt_path
from schemas.documents import ReceiptDoc
from schemas.enums import ReceiptStatus
from schemas.envelopes import OutputEnvelope
from schemas.objects import ObjectFinalized
from schemas.paths import StepObjectPath, gs_uri
from store.ports import Conflict, ObjectMissing, ObjectTooLarge

log = logging.getLogger("validibot.pipeline")


@dataclass(frozen=True)
class IngestStage:
    context: StageContext

    def handle(self, event: ObjectFinalized, path: StepObjectPath) -> Handled:
        ctx = self.context
        output, problem = self._read_output(event)
        if output is None:
            rejection = reject(event, path, problem or "unreadable", settings=ctx.settings, now=ctx.clock())
            return self._commit_rejection(rejection)
        for _ in range(MAX_COMMIT_TRIES):
            receipt = ctx.store.receipt(output.callback_id)
            if receipt is not None:
                return self._replay(output.callback_id, receipt)
            plan = plan_ingest(
                event,
                path,
                output,
                run=ctx.store.run(path.run_id),
                attempt=ctx.store.attempt(path.run_id, path.attempt_id),
                next_callback_id=ctx.new_callback_id(),
                settings=ctx.settings,
                now=ctx.clock(),
            )
            if plan.pending_receipt is None:
                return self._commit_rejection(plan)
            try:
                ctx.store.commit(plan.writes)
            except Conflict:
                continue
            ctx.perform(plan.effects)
            self._complete(plan.pending_receipt)
            return Handled(Outcome.APPLIED)
        raise RuntimeError(f"attempt {path.run_id}/{path.attempt_id} kept changing while its output was applied")

    def _read_output(self, event: ObjectFinalized) -> tuple[OutputEnvelope | None, str | None]:
        limit = self.context.settings.max_envelope_bytes
        try:
            data = self.context.objects.read_bytes(gs_uri(event.bucket, event.name), event.generation, limit)
            return OutputEnvelope.model_validate_json(data), None
        except ObjectMissing:
            return None, "output.json was deleted or replaced before it was read"
        except ObjectTooLarge:
            return None, f"output.json is over {limit} bytes"
        except ValidationError as exc:
            return None, f"output.json is not a valid output envelope: {short(exc)}"

    def _commit_rejection(self, plan: Plan) -> Handled:
        assert plan.rejection is not None, "a plan that applies nothing records a rejection"
        try:
            self.context.store.commit(plan.writes)
        except Conflict:
            return Handled(Outcome.ALREADY_RECORDED)
        log.warning("output %s rejected: %s", plan.rejection.output_uri, plan.rejection.reason)
        return Handled(Outcome.REJECTED, plan.rejection.reason)

    def _complete(self, pending: PendingReceipt) -> None:
        completed = pending.receipt.model_copy(update={"status": ReceiptStatus.COMPLETED})
        self.context.store.commit([Write(receipt_path(pending.callback_id), completed, "upsert")])

    def _replay(self, callback_id: str, receipt: ReceiptDoc) -> Handled:
        if receipt.status != ReceiptStatus.PROCESSING:
            return Handled(Outcome.DUPLICATE)
        # An earlier delivery committed the result and stopped before its effects: perform them again.
        store = self.context.store
        assert receipt.run_id is not None
        assert receipt.attempt_id is not None
        run = store.run(receipt.run_id)
        attempt = store.attempt(receipt.run_id, receipt.attempt_id)
        assert run is not None, "a PROCESSING receipt is committed with its run"
        assert attempt is not None, "a PROCESSING receipt is committed with its attempt"
        step = store.step(receipt.run_id, attempt.doc.step)
        assert step is not None
        next_attempt = None
        if run.doc.ended_at is None:
            following = store.step(receipt.run_id, attempt.doc.step + 1)
            next_id = following.attempt_id if following else None
            found = store.attempt(receipt.run_id, next_id) if next_id else None
            next_attempt = ScheduledAttempt(next_id, found.doc) if next_id and found else None
        self.context.perform(ingest_effects(receipt.run_id, run.doc, step=step, next_attempt=next_attempt))
        self._complete(PendingReceipt(callback_id, receipt))
        return Handled(Outcome.EFFECTS_REPLAYED)
