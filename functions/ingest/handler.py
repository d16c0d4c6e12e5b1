"""INGEST: an output.json finalized → verified against its attempt, applied exactly once, then the next step or the
run's end. The receipt under the output's callback_id is the dedupe."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from functions.common import PendingReceipt, Plan, ScheduledAttempt
from functions.ingest.transitions import (
    ReceivedOutput,
    admit,
    authentic_callback_id,
    ingest_effects,
    plan_ingest,
    reject,
)
from functions.stage import MAX_COMMIT_TRIES, Handled, Known, Outcome, StageContext
from schemas.changes import Write, receipt_path
from schemas.documents import ReceiptDoc
from schemas.enums import ReceiptStatus
from schemas.envelopes import sha256_hex
from schemas.objects import ObjectFinalized
from schemas.paths import StepObjectPath, gs_uri
from schemas.signing import SIGNATURE_METADATA_KEY
from store.ports import Conflict, ObjectMissing, ObjectTooLarge, streamed_sha256

log = logging.getLogger("validibot.pipeline")

# An output up to this many times VALIDIBOT_MAX_ENVELOPE_BYTES is still read to check its signature (so a genuine
# one fails its step saying why); a larger one is refused unread.
OVERSIZE_CHECKED = 4


@dataclass(frozen=True)
class IngestStage:
    context: StageContext

    def handle(self, event: ObjectFinalized, path: StepObjectPath, known: Known | None = None) -> Handled:
        ctx = self.context
        secret = ctx.settings.signing_secret_bytes()
        received, problem = self._receive(event, known.data if known else None)
        # A redelivery, or the late event of an output the chain applied: known from its receipt alone. An output
        # chained from its launch was written just now: its receipt's create is the only check it needs.
        callback_id = authentic_callback_id(path, received, secret) if received else None
        receipt = ctx.store.receipt(callback_id) if callback_id and known is None else None
        if callback_id and receipt is not None:
            return self.replay(callback_id, receipt)
        run = (known and known.run) or ctx.store.run(path.run_id)
        attempt = (known and known.attempt) or ctx.store.attempt(path.run_id, path.attempt_id)
        if run is None or attempt is None:
            reason = f"no run {path.run_id} with attempt {path.attempt_id}"
            return self._commit_rejection(reject(event, path, reason, settings=ctx.settings, now=ctx.clock()))
        output = None
        if received is not None:
            output, problem = admit(
                event,
                path,
                received,
                run=run.doc,
                attempt=attempt.doc,
                secret=secret,
                settings=ctx.settings,
                now=ctx.clock(),
            )
        if output is None:
            rejection = reject(event, path, problem or "unreadable", settings=ctx.settings, now=ctx.clock())
            return self._commit_rejection(rejection)
        # The receipt is looked up once per try; the first is done (or, chained, left to the create) already.
        looked_up = callback_id == output.callback_id
        for _ in range(MAX_COMMIT_TRIES):
            # Admitted outputs carry their attempt's own callback_id: a well-formed document id.
            receipt = None if looked_up else ctx.store.receipt(output.callback_id)
            looked_up = False
            if receipt is not None:
                return self.replay(output.callback_id, receipt)
            plan = plan_ingest(
                event,
                path,
                output,
                run=run,
                attempt=attempt,
                next_callback_id=ctx.new_callback_id(),
                settings=ctx.settings,
                now=ctx.clock(),
            )
            if plan.pending_receipt is None:
                return self._commit_rejection(plan)
            try:
                committed = ctx.store.commit(plan.writes)
            except Conflict:
                run, attempt = ctx.store.run(path.run_id), ctx.store.attempt(path.run_id, path.attempt_id)
                continue
            chained = ctx.perform(plan.effects, committed)
            self._complete(plan.pending_receipt)
            return Handled(Outcome.APPLIED, follow_up=chained)
        raise RuntimeError(f"attempt {path.run_id}/{path.attempt_id} kept changing while its output was applied")

    def _receive(self, event: ObjectFinalized, data: bytes | None) -> tuple[ReceivedOutput | None, str | None]:
        """That version's hash, signature and (when small enough to parse) bytes; `data` when the chain has them."""
        objects, limit = self.context.objects, self.context.settings.max_envelope_bytes
        uri = gs_uri(event.bucket, event.name)
        try:
            signature, size = self._signature_and_size(event, uri)
            if data is not None:
                return ReceivedOutput(len(data), sha256_hex(data), signature, data), None
            if signature is None:
                # Refused unsigned whatever it holds: not worth a byte of reading.
                return ReceivedOutput(size, "", None, None), None
            if size > OVERSIZE_CHECKED * limit:
                # The runtime never writes more than the limit: past a few times it, this is no attempt's output.
                return None, f"output.json is {size} bytes, far over VALIDIBOT_MAX_ENVELOPE_BYTES; not read"
            if size > limit:
                return ReceivedOutput(size, streamed_sha256(objects, uri, event.generation), signature, None), None
            data = objects.read_bytes(uri, event.generation, limit)
        except (ObjectMissing, ObjectTooLarge):
            return None, "output.json was deleted or replaced before it was read"
        return ReceivedOutput(len(data), sha256_hex(data), signature, data), None

    def _signature_and_size(self, event: ObjectFinalized, uri: str) -> tuple[str | None, int]:
        """From the notification, which carries the version's metadata; a lookup only for an event shape without it.
        Metadata can be patched without a new version, so nothing here is believed until the bytes verify."""
        if event.metadata:
            return event.metadata.get(SIGNATURE_METADATA_KEY), event.size
        found = self.context.objects.stat(uri, event.generation)
        if found is None:
            raise ObjectMissing(uri)
        return found.signature, found.size

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

    def replay(self, callback_id: str, receipt: ReceiptDoc) -> Handled:
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
        chained = self.context.perform(ingest_effects(receipt.run_id, run.doc, step=step, next_attempt=next_attempt))
        self._complete(PendingReceipt(callback_id, receipt))
        return Handled(Outcome.EFFECTS_REPLAYED, follow_up=chained)
