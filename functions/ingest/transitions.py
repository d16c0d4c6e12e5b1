"""INGEST's decisions: .../{attempt_id}/output.json finalized → apply a verified output once, or record why not."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from functions.common import (
    NextAttemptTerms,
    PendingReceipt,
    Plan,
    Problem,
    ScheduledAttempt,
    StepOutcome,
    after_step,
    input_object,
    lifecycle_event,
    run_write,
    step_doc,
    step_spec,
)
from schemas.changes import Effects, Versioned, Write, attempt_path, finding_path, receipt_path, step_path
from schemas.documents import AttemptDoc, Counts, FindingDoc, ReceiptDoc, RunDoc, StepDoc, StepSpec
from schemas.enums import (
    AttemptState,
    EnvelopeStatus,
    ErrorCategory,
    LifecycleType,
    ReceiptStatus,
    RunStatus,
    StepStatus,
)
from schemas.envelopes import RUNTIME_CODE, TIMEOUT_CODE, OutputEnvelope
from schemas.objects import ObjectFinalized
from schemas.paths import StepObjectPath, gs_uri
from schemas.settings import Settings


def rejected_receipt_id(event: ObjectFinalized) -> str:
    """Rejections are keyed by the object version, never by a claimed callback_id they could squat on."""
    return "rejected-" + hashlib.sha256(f"{event.bucket}/{event.name}#{event.generation}".encode()).hexdigest()[:40]


def receipt_for(
    event: ObjectFinalized,
    path: StepObjectPath,
    status: ReceiptStatus,
    *,
    settings: Settings,
    now: datetime,
    reason: str | None = None,
) -> ReceiptDoc:
    return ReceiptDoc(
        run_id=path.run_id,
        attempt_id=path.attempt_id,
        status=status,
        received_at=now,
        output_uri=gs_uri(event.bucket, event.name),
        output_generation=event.generation,
        expire_at=now + timedelta(days=settings.receipt_retention_days),
        reason=reason,
    )


def reject(event: ObjectFinalized, path: StepObjectPath, reason: str, *, settings: Settings, now: datetime) -> Plan:
    """An output that cannot be this attempt's: an audit record under its own object id, nothing else."""
    receipt = receipt_for(event, path, ReceiptStatus.REJECTED, settings=settings, now=now, reason=reason)
    return Plan(writes=[Write(receipt_path(rejected_receipt_id(event)), receipt, "create")], rejection=receipt)


def output_mismatch(
    event: ObjectFinalized, path: StepObjectPath, output: OutputEnvelope, *, attempt: AttemptDoc
) -> str | None:
    """Why an output cannot be this attempt's, or None when every binding of DESIGN §6 holds."""
    if gs_uri(event.bucket, event.name) != attempt.expected_output_uri:
        return "output path is not the attempt's expected_output_uri"
    if output.callback_id != attempt.callback_id:
        return "callback_id does not match the attempt"
    if output.input_envelope_sha256 != attempt.input_sha256:
        return "input_envelope_sha256 does not match the input.json that was launched"
    if output.run_id != path.run_id or output.attempt_id != path.attempt_id:
        return "run_id or attempt_id does not match the output's path"
    if output.step_key != attempt.step_key or path.step_number != attempt.step:
        return "step does not match the attempt"
    return None


_FAILURE_CATEGORY = {
    EnvelopeStatus.FAILED_VALIDATION: ErrorCategory.VALIDATION_FAILED,
    EnvelopeStatus.FAILED_RUNTIME: ErrorCategory.RUNTIME_ERROR,
    EnvelopeStatus.CANCELLED: ErrorCategory.RUNTIME_ERROR,
}


def _step_problem(spec: StepSpec, number: int, output: OutputEnvelope, *, counts: Counts) -> Problem | None:
    status = EnvelopeStatus(output.status)
    if status == EnvelopeStatus.SUCCESS:
        return None
    label = f"step {number} '{spec.name}'"
    if status == EnvelopeStatus.FAILED_VALIDATION:
        plural = "" if counts.ERROR == 1 else "s"
        text = f"{label} failed validation with {counts.ERROR} error{plural}"
    elif status == EnvelopeStatus.FAILED_RUNTIME:
        timeout = next((m.text for m in reversed(output.messages) if m.code == TIMEOUT_CODE), None)
        if timeout is not None:
            return Problem(ErrorCategory.TIMEOUT, f"{label} timed out: {timeout}")
        detail = next((m.text for m in reversed(output.messages) if m.code == RUNTIME_CODE), "no detail given")
        text = f"{label} could not run: {detail}"
    else:
        text = f"{label} was cancelled"
    return Problem(_FAILURE_CATEGORY[status], text)


def _final_state(status: EnvelopeStatus, problem: Problem | None) -> AttemptState:
    if status in (EnvelopeStatus.SUCCESS, EnvelopeStatus.FAILED_VALIDATION):
        return AttemptState.COMPLETED
    if problem is not None and problem.category == ErrorCategory.TIMEOUT:
        return AttemptState.TIMED_OUT
    return AttemptState.FAILED


def plan_ingest(
    event: ObjectFinalized,
    path: StepObjectPath,
    output: OutputEnvelope,
    *,
    run: Versioned[RunDoc] | None,
    attempt: Versioned[AttemptDoc] | None,
    next_callback_id: str,
    settings: Settings,
    now: datetime,
) -> Plan:
    """Apply a verified output to its attempt, step and run, or record why it was not applied."""
    if run is None or attempt is None:
        return reject(event, path, f"no run {path.run_id} with attempt {path.attempt_id}", settings=settings, now=now)
    mismatch = output_mismatch(event, path, output, attempt=attempt.doc)
    if mismatch is not None:
        return reject(event, path, mismatch, settings=settings, now=now)
    doc, current = run.doc, attempt.doc
    if RunStatus(doc.status).is_terminal or not AttemptState(current.state).is_live or doc.current_step != current.step:
        late = receipt_for(
            event, path, ReceiptStatus.REJECTED, settings=settings, now=now,
            reason=f"late: attempt is {current.state} and run is {doc.status}; not applied",
        )  # fmt: skip
        return Plan(writes=[Write(receipt_path(output.callback_id), late, "create")], rejection=late)

    spec = step_spec(doc, current.step)
    counts = Counts.of([m.severity for m in output.messages])
    problem = _step_problem(spec, current.step, output, counts=counts)
    status = EnvelopeStatus(output.status)
    stored = output.messages[: settings.max_findings_per_step]
    step = step_doc(
        spec,
        current.step,
        status=StepStatus.PASSED if problem is None else StepStatus.FAILED,
        attempt_id=path.attempt_id,
        started_at=current.dispatched_at or now,
        ended_at=now,
        counts=counts,
        metrics=output.metrics,
        artifacts=output.artifacts,
        findings_stored=len(stored),
        error=problem.message if problem else None,
    )
    finished = current.model_copy(
        update={
            "state": _final_state(status, problem),
            "finished_at": now,
            "error": problem.message if problem else None,
        }
    )
    cancelled = status == EnvelopeStatus.CANCELLED
    folded = after_step(
        path.run_id,
        doc,
        StepOutcome(current.step, counts, problem, halt=cancelled, cancelled=cancelled),
        now=now,
        next_terms=NextAttemptTerms(next_callback_id, settings),
    )
    receipt = receipt_for(event, path, ReceiptStatus.PROCESSING, settings=settings, now=now)
    findings = [
        Write(
            finding_path(path.run_id, f"{path.attempt_id}-{index:04d}"),
            FindingDoc(
                step=current.step, index=index, severity=m.severity, code=m.code, message=m.text, location=m.location
            ),
            "upsert",
        )
        for index, m in enumerate(stored)
    ]
    writes = [
        Write(receipt_path(output.callback_id), receipt, "create"),
        Write(attempt_path(path.run_id, path.attempt_id), finished, "replace", attempt.update_time),
        Write(step_path(path.run_id, current.step), step, "upsert"),
        run_write(path.run_id, folded.run, run.update_time),
        *folded.writes,
        *findings,
    ]
    return Plan(
        writes=writes,
        effects=ingest_effects(path.run_id, folded.run, step=step, next_attempt=folded.next_attempt),
        pending_receipt=PendingReceipt(output.callback_id, receipt),
    )


def ingest_effects(run_id: str, run: RunDoc, *, step: StepDoc, next_attempt: ScheduledAttempt | None) -> Effects:
    """What follows an applied output: the step's event, then the next input.json or the run's end."""
    ended = step.ended_at or run.created_at
    events = [lifecycle_event(LifecycleType.STEP_COMPLETED, run_id, run, time=ended, step=step)]
    if run.ended_at is not None:
        events.append(lifecycle_event(LifecycleType.RUN_COMPLETED, run_id, run, time=run.ended_at))
    objects = []
    if next_attempt is not None and next_attempt.attempt.state == AttemptState.SCHEDULED:
        objects.append(input_object(run_id, run, next_attempt))
    return Effects(events=events, objects=objects)
