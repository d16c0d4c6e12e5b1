"""INGEST's decisions: .../{attempt_id}/output.json finalized → apply a verified output once, or record why not."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from pydantic import ValidationError

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
from jobs.registry import UnknownValidator, get_validator
from schemas.changes import Effects, Versioned, Write, attempt_path, finding_path, receipt_path, step_path
from schemas.documents import AttemptDoc, Counts, FindingDoc, ReceiptDoc, RunDoc, StepDoc, StepSpec
from schemas.enums import (
    AttemptState,
    EnvelopeStatus,
    ErrorCategory,
    LifecycleType,
    ReceiptStatus,
    RunStatus,
    Severity,
    StepStatus,
)
from schemas.envelopes import RUNTIME_CODE, TIMEOUT_CODE, Message, OutputEnvelope, Timing, ValidatorRef
from schemas.objects import ObjectFinalized
from schemas.paths import ARTIFACTS_FOLDER, OUTPUT_NAME, StepObjectPath, gs_uri
from schemas.settings import Settings
from schemas.signing import attempt_signing_key, is_callback_id, signature_valid


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


@dataclass(frozen=True)
class ReceivedOutput:
    """One output.json version as read: what its bytes hash to, the signature its metadata carries, and the bytes
    themselves when within VALIDIBOT_MAX_ENVELOPE_BYTES (a larger one is checked, never parsed)."""

    size: int
    sha256: str
    signature: str | None
    data: bytes | None

    @cached_property
    def envelope(self) -> OutputEnvelope | ValidationError | None:
        """The bytes parsed, once however often asked (they may be megabytes): the envelope, why they are not
        one, or None when they were too large to read."""
        if self.data is None:
            return None
        try:
            return OutputEnvelope.model_validate_json(self.data)
        except ValidationError as exc:
            return exc


def authentic_callback_id(path: StepObjectPath, received: ReceivedOutput, secret: bytes) -> str | None:
    """The output's callback_id when its signature verifies with the key derived from it and the output's path,
    which only the functions could have handed out: then it is the attempt's own, and its receipt says whether the
    output was applied already. None when that cannot be known without the attempt."""
    envelope = received.envelope
    if received.signature is None or not isinstance(envelope, OutputEnvelope):
        return None
    callback_id = envelope.callback_id
    if not is_callback_id(callback_id):
        return None
    key = attempt_signing_key(secret, run_id=path.run_id, attempt_id=path.attempt_id, callback_id=callback_id)
    return callback_id if signature_valid(key, received.sha256, received.signature) else None


def admit(
    event: ObjectFinalized,
    path: StepObjectPath,
    received: ReceivedOutput,
    *,
    run: RunDoc,
    attempt: AttemptDoc,
    secret: bytes,
    settings: Settings,
    now: datetime,
) -> tuple[OutputEnvelope | None, str | None]:
    """The output to apply, or why it is rejected. Only an output signed with its attempt's key is believed; one
    that is signed but unusable (too large, malformed, over a cap) is this attempt's own failure, so it becomes
    a failed_runtime output saying why: the step fails instead of the run waiting forever."""
    if gs_uri(event.bucket, event.name) != attempt.expected_output_uri:
        return None, "output path is not the attempt's expected_output_uri"
    key = attempt_signing_key(secret, run_id=path.run_id, attempt_id=path.attempt_id, callback_id=attempt.callback_id)
    if received.signature is None:
        return None, "output.json is not signed"
    if not signature_valid(key, received.sha256, received.signature):
        return None, "output.json's signature does not verify with its attempt's key"
    output = received.envelope
    if output is None:
        reason = (
            f"its output.json is {received.size} bytes; the limit is {settings.max_envelope_bytes} bytes "
            "(VALIDIBOT_MAX_ENVELOPE_BYTES)"
        )
        return substitute_failure(path, reason, run=run, attempt=attempt, now=now), None
    if isinstance(output, ValidationError):
        reason = f"its output.json is not a valid output envelope: {_first_error(output)}"
        return substitute_failure(path, reason, run=run, attempt=attempt, now=now), None
    mismatch = output_mismatch(event, path, output, attempt=attempt)
    if mismatch is not None:
        return None, mismatch
    excess = over_cap(output, settings)
    if excess is not None:
        return substitute_failure(
            path, f"its output could not be recorded: {excess}", run=run, attempt=attempt, now=now
        ), None
    return output, None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or 'document'}: {first['msg']}"


def substitute_failure(
    path: StepObjectPath, reason: str, *, run: RunDoc, attempt: AttemptDoc, now: datetime
) -> OutputEnvelope:
    """The failed_runtime output INGEST records in place of a genuine but unusable one."""
    spec = step_spec(run, attempt.step)
    try:
        validator = get_validator(spec.validator)
        ref = ValidatorRef(id=validator.id, type=validator.type, version=validator.version)
    except UnknownValidator:
        ref = ValidatorRef(id=spec.validator, type=spec.validator, version="unknown")
    return OutputEnvelope(
        run_id=path.run_id,
        step_key=attempt.step_key,
        attempt_id=path.attempt_id,
        callback_id=attempt.callback_id,
        input_envelope_sha256=attempt.input_sha256,
        validator=ref,
        status=EnvelopeStatus.FAILED_RUNTIME,
        timing=Timing(started_at=attempt.dispatched_at or now, finished_at=now),
        messages=[Message(severity=Severity.ERROR, code=RUNTIME_CODE, text=reason)],
    )


def over_cap(output: OutputEnvelope, settings: Settings) -> str | None:
    """What in a genuine output exceeds what one output may put into Firestore, or None."""
    if len(output.metrics) > settings.max_metrics_per_output:
        return (
            f"it has {len(output.metrics)} metrics; the limit is {settings.max_metrics_per_output} "
            "(VALIDIBOT_MAX_METRICS_PER_OUTPUT)"
        )
    if len(output.artifacts) > settings.max_artifacts_per_output:
        return (
            f"it lists {len(output.artifacts)} artifacts; the limit is {settings.max_artifacts_per_output} "
            "(VALIDIBOT_MAX_ARTIFACTS_PER_OUTPUT)"
        )
    outputs_bytes = len(json.dumps(output.outputs, default=str).encode())
    if outputs_bytes > settings.max_outputs_bytes:
        return (
            f"its outputs are {outputs_bytes} bytes of JSON; the limit is {settings.max_outputs_bytes} bytes "
            "(VALIDIBOT_MAX_OUTPUTS_BYTES)"
        )
    stored = output.messages[: settings.max_findings_per_step]
    longest = max((len(m.text) for m in stored), default=0)
    if longest > settings.max_message_chars:
        return (
            f"a message is {longest} characters long; the limit is {settings.max_message_chars} "
            "(VALIDIBOT_MAX_MESSAGE_CHARS)"
        )
    names = [
        *(
            n
            for m in stored
            for n in (m.code, m.location.path if m.location else None, m.location.file_role if m.location else None)
        ),
        *(n for metric in output.metrics for n in (metric.name, metric.unit)),
        *(n for a in output.artifacts for n in (a.name, a.uri, a.mime_type)),
    ]
    longest = max((len(n) for n in names if n is not None), default=0)
    if longest > settings.max_name_chars:
        return (
            f"a code, name or path is {longest} characters long; the limit is {settings.max_name_chars} "
            "(VALIDIBOT_MAX_NAME_CHARS)"
        )
    if output.counts is not None and not output.counts.covers(Counts.of([m.severity for m in output.messages])):
        return "its counts are lower than the messages it lists"
    return None


def output_mismatch(
    event: ObjectFinalized, path: StepObjectPath, output: OutputEnvelope, *, attempt: AttemptDoc
) -> str | None:
    """Why an output cannot be this attempt's, or None when every binding of DESIGN §6 holds."""
    if gs_uri(event.bucket, event.name) != attempt.expected_output_uri:
        return "output path is not the attempt's expected_output_uri"
    if not is_callback_id(output.callback_id) or output.callback_id != attempt.callback_id:
        return "callback_id does not match the attempt"
    if output.input_envelope_sha256 != attempt.input_sha256:
        return "input_envelope_sha256 does not match the input.json that was launched"
    if output.run_id != path.run_id or output.attempt_id != path.attempt_id:
        return "run_id or attempt_id does not match the output's path"
    if output.step_key != attempt.step_key or path.step_number != attempt.step:
        return "step does not match the attempt"
    artifacts = attempt.expected_output_uri.removesuffix(OUTPUT_NAME) + ARTIFACTS_FOLDER
    for artifact in output.artifacts:
        leaf = artifact.uri.removeprefix(artifacts)
        if leaf == artifact.uri or not leaf or "/" in leaf or leaf in (".", ".."):
            return f"artifact {artifact.name!r} lies outside the attempt's artifacts/ folder"
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
    counts = output.message_counts()
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
    # What later steps' assertions read as steps.<key>: the same `o` this step's own assertions saw.
    results = {**output.outputs, **{metric.name: metric.value for metric in output.metrics}}
    folded = after_step(
        path.run_id,
        doc.model_copy(update={"step_results": {**doc.step_results, current.step_key: results}}),
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
