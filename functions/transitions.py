"""The pipeline's decisions, as pure functions: documents and an event in, a Plan out.

A Plan is what a handler commits (all-or-nothing document writes whose preconditions are the dedupe) and then
performs (lifecycle events, create-only objects). Effects are recomputed from committed state on a replay, so a
crash between commit and effects is repaired by the redelivery.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jobs.registry import UnknownValidator, get_validator
from jobs.validators.base import ConfigError, parse_config
from schemas.changes import (
    Write,
    attempt_path,
    finding_path,
    receipt_path,
    run_path,
    step_path,
)
from schemas.documents import (
    AttemptDoc,
    Counts,
    FindingDoc,
    OrgDoc,
    ReceiptDoc,
    RunDoc,
    StepDoc,
    StepSpec,
    Submission,
    WorkflowDoc,
    WorkflowSnapshot,
)
from schemas.enums import (
    AttemptState,
    EnvelopeStatus,
    ErrorCategory,
    JobStatus,
    LifecycleType,
    ReceiptStatus,
    RunStatus,
    StepStatus,
)
from schemas.envelopes import (
    RUNTIME_CODE,
    TIMEOUT_CODE,
    FileRef,
    InputContext,
    InputEnvelope,
    OrgRef,
    OutputEnvelope,
    ValidatorRef,
    WorkflowRef,
    sha256_hex,
)
from schemas.lifecycle import LifecycleData, LifecycleEvent, StepRef
from schemas.objects import ObjectFinalized
from schemas.paths import (
    INPUT_NAME,
    OUTPUT_NAME,
    InboxPath,
    StepObjectPath,
    UnsafeName,
    attempt_id_for,
    attempt_prefix,
    check_filename,
    gs_uri,
    is_slug,
)
from schemas.settings import Settings
from store.runs import Versioned


@dataclass(frozen=True)
class NewObject:
    uri: str
    data: bytes
    content_type: str = "application/json"


@dataclass
class Plan:
    writes: list[Write] = field(default_factory=list)
    events: list[LifecycleEvent] = field(default_factory=list)
    objects: list[NewObject] = field(default_factory=list)
    # An applied output's receipt: committed as PROCESSING, marked COMPLETED once the effects are done.
    receipt_to_complete: tuple[str, ReceiptDoc] | None = None


@dataclass(frozen=True)
class Problem:
    """Why a submission or a step cannot go on, as the user will read it."""

    category: ErrorCategory
    message: str


# ---------------------------------------------------------------------------------------------------------
# Shared pieces


def lifecycle_event(
    event_type: LifecycleType, run_id: str, run: RunDoc, time: datetime, step: StepDoc | None = None
) -> LifecycleEvent:
    return LifecycleEvent(
        type=event_type,
        time=time,
        data=LifecycleData(
            run_id=run_id,
            org=run.org,
            workflow=run.workflow_slug,
            status=run.status,
            step=StepRef(number=step.number, key=step.step_key, status=step.status) if step else None,
            counts=run.counts,
            error_category=run.error_category,
            error=run.error,
        ),
    )


def step_doc(spec: StepSpec, number: int, **state: object) -> StepDoc:
    return StepDoc(number=number, step_key=spec.key, name=spec.name, validator=spec.validator, **state)


def _snapshot(run: RunDoc) -> WorkflowSnapshot:
    if run.workflow is None:
        raise ValueError("a run refused at intake has no workflow and no steps")
    return run.workflow


def build_input(run_id: str, run: RunDoc, attempt_id: str, attempt: AttemptDoc, bucket: str) -> InputEnvelope:
    """The input envelope of an attempt. Deterministic: rebuilding it gives the same bytes and sha256."""
    workflow = _snapshot(run)
    spec = workflow.steps[attempt.step - 1]
    validator = get_validator(spec.validator)
    submission = run.submission
    assert submission is not None, "a run with steps always has its submission"
    return InputEnvelope(
        run_id=run_id,
        validator=ValidatorRef(id=validator.id, type=validator.type, version=validator.version),
        org=OrgRef(id=run.org, name=run.org_name),
        workflow=WorkflowRef(id=workflow.id, step_key=spec.key, step_name=spec.name),
        input_files=[
            FileRef(
                name=submission.name,
                mime_type=submission.content_type,
                role="primary",
                uri=submission.uri,
                size_bytes=submission.size_bytes,
                sha256=submission.sha256,
                generation=submission.generation,
            )
        ],
        inputs=spec.config,
        context=InputContext(
            attempt_id=attempt_id,
            callback_id=attempt.callback_id,
            expected_output_uri=attempt.expected_output_uri,
            execution_bundle_uri=attempt.input_uri.removesuffix(INPUT_NAME),
            timeout_seconds=attempt.timeout_seconds,
        ),
    )


def schedule_attempt(
    run_id: str,
    run: RunDoc,
    step_number: int,
    callback_id: str,
    bucket: str,
    settings: Settings,
    now: datetime,
) -> tuple[str, AttemptDoc]:
    """The first attempt of a step: its id is deterministic, its callback_id is the caller's random token."""
    spec = _snapshot(run).steps[step_number - 1]
    attempt_id = attempt_id_for(step_number, 1)
    prefix = attempt_prefix(run.org, run_id, step_number, spec.key, attempt_id)
    attempt = AttemptDoc(
        step=step_number,
        step_key=spec.key,
        callback_id=callback_id,
        state=AttemptState.SCHEDULED,
        launcher="inline" if get_validator(spec.validator).mode == "inline" else settings.job_launcher,
        input_uri=gs_uri(bucket, prefix + INPUT_NAME),
        input_sha256="",
        expected_output_uri=gs_uri(bucket, prefix + OUTPUT_NAME),
        scheduled_at=now,
        timeout_seconds=spec.timeout_seconds or settings.step_timeout_seconds,
    )
    envelope = build_input(run_id, run, attempt_id, attempt, bucket)
    return attempt_id, attempt.model_copy(update={"input_sha256": sha256_hex(envelope.to_bytes())})


def input_object(run_id: str, run: RunDoc, attempt_id: str, attempt: AttemptDoc, bucket: str) -> NewObject:
    return NewObject(attempt.input_uri, build_input(run_id, run, attempt_id, attempt, bucket).to_bytes())


@dataclass(frozen=True)
class StepOutcome:
    number: int
    counts: Counts
    problem: Problem | None
    halt: bool = False  # end the run whatever the workflow's fail_policy (cancellation, system errors)
    cancelled: bool = False


def _finish(run: RunDoc, status: RunStatus, now: datetime) -> RunDoc:
    started = run.started_at or run.created_at
    return run.model_copy(
        update={
            "status": status,
            "ended_at": now,
            "duration_ms": max(0, int((now - started).total_seconds() * 1000)),
        }
    )


def after_step(
    run_id: str,
    run: RunDoc,
    outcome: StepOutcome,
    now: datetime,
    schedule_next: Callable[[RunDoc, int], tuple[str, AttemptDoc]],
) -> tuple[RunDoc, list[Write], str | None, AttemptDoc | None]:
    """Fold a finished step into the run: schedule the next step, or end the run (skipping what is left)."""
    workflow = _snapshot(run)
    run = run.model_copy(update={"counts": run.counts.plus(outcome.counts)})
    if outcome.problem and run.error_category is None:
        run = run.model_copy(update={"error_category": outcome.problem.category, "error": outcome.problem.message})
    stop = outcome.halt or (outcome.problem is not None and workflow.fail_policy == "stop")
    total = len(workflow.steps)
    if outcome.number < total and not stop:
        next_number = outcome.number + 1
        run = run.model_copy(update={"current_step": next_number})
        next_id, next_attempt = schedule_next(run, next_number)
        spec = workflow.steps[next_number - 1]
        writes = [
            Write(attempt_path(run_id, next_id), next_attempt, "create"),
            Write(step_path(run_id, next_number), step_doc(spec, next_number, attempt_id=next_id), "upsert"),
        ]
        return run, writes, next_id, next_attempt
    if outcome.cancelled:
        status = RunStatus.CANCELED
    elif run.error_category is None:
        status = RunStatus.SUCCEEDED
    else:
        status = RunStatus.TIMED_OUT if run.error_category == ErrorCategory.TIMEOUT else RunStatus.FAILED
    run = _finish(run, status, now)
    skipped = [
        Write(step_path(run_id, n), step_doc(workflow.steps[n - 1], n, status=StepStatus.SKIPPED), "upsert")
        for n in range(outcome.number + 1, total + 1)
        if stop
    ]
    return run, skipped, None, None


# ---------------------------------------------------------------------------------------------------------
# INTAKE: inbox/{org}/{workflow}/{filename} finalized


def intake_problem(
    path: InboxPath,
    event: ObjectFinalized,
    org: OrgDoc | None,
    workflow: WorkflowDoc | None,
    settings: Settings,
) -> Problem | None:
    """Everything that can refuse a submission before its bytes are read."""
    if not is_slug(path.org) or org is None:
        return Problem(ErrorCategory.VALIDATION_FAILED, f"unknown organization {path.org!r}")
    if not is_slug(path.workflow) or workflow is None:
        return Problem(
            ErrorCategory.VALIDATION_FAILED,
            f"organization {path.org!r} has no workflow {path.workflow!r}; upload to inbox/{path.org}/<workflow>/",
        )
    try:
        check_filename(path.filename, settings.max_filename_length)
    except UnsafeName as exc:
        return Problem(ErrorCategory.VALIDATION_FAILED, f"unsafe file name: {exc}")
    limit = submission_limit(workflow, settings)
    if event.size > limit:
        return Problem(
            ErrorCategory.VALIDATION_FAILED,
            f"the file is {event.size} bytes; the limit is {limit} bytes (VALIDIBOT_MAX_SUBMISSION_BYTES)",
        )
    for spec in workflow.steps:
        try:
            parse_config(get_validator(spec.validator), spec.config)
        except (UnknownValidator, ConfigError) as exc:
            return Problem(ErrorCategory.SYSTEM_ERROR, f"workflow step {spec.key!r} is misconfigured: {exc}")
    return None


def submission_limit(workflow: WorkflowDoc, settings: Settings) -> int:
    own = workflow.limits.max_submission_bytes
    return min(own, settings.max_submission_bytes) if own else settings.max_submission_bytes


def plan_intake(
    run_id: str,
    event: ObjectFinalized,
    path: InboxPath,
    org: OrgDoc | None,
    workflow: WorkflowDoc | None,
    submission: Submission | None,
    problem: Problem | None,
    callback_id: str,
    settings: Settings,
    now: datetime,
) -> Plan:
    run = RunDoc(
        org=path.org,
        org_name=org.name if org else path.org,
        workflow=None,
        workflow_slug=path.workflow,
        status=RunStatus.PENDING,
        source=f"{gs_uri(event.bucket, event.name)}#{event.generation}",
        submission=submission,
        submission_name=path.filename,
        created_at=now,
    )
    if problem is not None or workflow is None or submission is None:
        problem = problem or Problem(ErrorCategory.SYSTEM_ERROR, "the submission could not be stored")
        run = _finish(
            run.model_copy(update={"error_category": problem.category, "error": problem.message}),
            RunStatus.FAILED,
            now,
        )
        return Plan(writes=[Write(run_path(run_id), run, "create")], events=intake_events(run_id, run))

    run = run.model_copy(
        update={
            "workflow": WorkflowSnapshot(
                id=f"{workflow.org}.{workflow.slug}",
                slug=workflow.slug,
                version=workflow.version,
                name=workflow.name,
                fail_policy=workflow.fail_policy,
                steps=workflow.steps,
            ),
            "current_step": 1,
        }
    )
    attempt_id, attempt = schedule_attempt(run_id, run, 1, callback_id, event.bucket, settings, now)
    steps = [
        step_doc(spec, n, attempt_id=attempt_id if n == 1 else None) for n, spec in enumerate(workflow.steps, start=1)
    ]
    writes = [
        Write(run_path(run_id), run, "create"),
        *(Write(step_path(run_id, s.number), s, "create") for s in steps),
        Write(attempt_path(run_id, attempt_id), attempt, "create"),
    ]
    return Plan(
        writes=writes,
        events=intake_events(run_id, run),
        objects=[input_object(run_id, run, attempt_id, attempt, event.bucket)],
    )


def intake_events(run_id: str, run: RunDoc) -> list[LifecycleEvent]:
    events = [lifecycle_event(LifecycleType.RUN_CREATED, run_id, run, run.created_at)]
    if run.ended_at is not None:
        events.append(lifecycle_event(LifecycleType.RUN_COMPLETED, run_id, run, run.ended_at))
    return events


def intake_replay(run_id: str, run: RunDoc, attempt: AttemptDoc | None, bucket: str) -> Plan:
    """Effects of an intake whose commit landed but whose effects may not have (a crash in between)."""
    objects = []
    if attempt is not None and attempt.state == AttemptState.SCHEDULED:
        objects.append(input_object(run_id, run, attempt_id_for(1, 1), attempt, bucket))
    return Plan(events=intake_events(run_id, run), objects=objects)


# ---------------------------------------------------------------------------------------------------------
# LAUNCH: .../{attempt_id}/input.json finalized


def plan_launch(
    run_id: str,
    run: Versioned[RunDoc],
    attempt_id: str,
    attempt: Versioned[AttemptDoc],
    input_generation: int,
    input_problem: str | None,
    settings: Settings,
    now: datetime,
) -> Plan | None:
    """Claim a SCHEDULED attempt (or a DISPATCHING one whose lease ran out). None: nothing to do."""
    current, doc = attempt.doc, run.doc
    if RunStatus(doc.status).is_terminal or doc.current_step != current.step:
        return None
    lease_expired = (
        current.state == AttemptState.DISPATCHING
        and current.execution_name is None
        and current.dispatched_at is not None
        and current.dispatched_at + timedelta(seconds=settings.dispatch_lease_seconds) <= now
    )
    if current.state != AttemptState.SCHEDULED and not lease_expired:
        return None
    if input_problem is not None:
        return _fail_launch(run_id, run, attempt_id, attempt, input_problem, input_generation, now)
    spec = _snapshot(doc).steps[current.step - 1]
    started = doc.started_at or now
    claimed = current.model_copy(
        update={
            "state": AttemptState.DISPATCHING,
            "input_generation": input_generation,
            "dispatched_at": now,
            "timeout_at": now + timedelta(seconds=current.timeout_seconds),
        }
    )
    step = step_doc(spec, current.step, status=StepStatus.RUNNING, attempt_id=attempt_id, started_at=now)
    new_run = doc.model_copy(update={"status": RunStatus.RUNNING, "started_at": started})
    return Plan(
        writes=[
            Write(attempt_path(run_id, attempt_id), claimed, "replace", attempt.update_time),
            Write(step_path(run_id, current.step), step, "upsert"),
            Write(run_path(run_id), new_run, "replace", run.update_time),
        ],
        events=[lifecycle_event(LifecycleType.STEP_STARTED, run_id, new_run, now, step)],
    )


def _fail_launch(
    run_id: str,
    run: Versioned[RunDoc],
    attempt_id: str,
    attempt: Versioned[AttemptDoc],
    reason: str,
    input_generation: int,
    now: datetime,
) -> Plan:
    """The step could not be started at all: the attempt and the run end with a SYSTEM_ERROR saying why."""
    current, doc = attempt.doc, run.doc
    spec = _snapshot(doc).steps[current.step - 1]
    problem = Problem(ErrorCategory.SYSTEM_ERROR, f"step {current.step} '{spec.name}': {reason}")
    failed = current.model_copy(
        update={"state": AttemptState.FAILED, "input_generation": input_generation, "finished_at": now, "error": reason}
    )
    step = step_doc(spec, current.step, status=StepStatus.FAILED, attempt_id=attempt_id, ended_at=now, error=reason)
    new_run, extra, _, _ = after_step(
        run_id,
        doc.model_copy(update={"started_at": doc.started_at or now}),
        StepOutcome(current.step, Counts(), problem, halt=True),
        now,
        _no_next_step,
    )
    return Plan(
        writes=[
            Write(attempt_path(run_id, attempt_id), failed, "replace", attempt.update_time),
            Write(step_path(run_id, current.step), step, "upsert"),
            Write(run_path(run_id), new_run, "replace", run.update_time),
            *extra,
        ],
        events=[
            lifecycle_event(LifecycleType.STEP_COMPLETED, run_id, new_run, now, step),
            lifecycle_event(LifecycleType.RUN_COMPLETED, run_id, new_run, now),
        ],
    )


def _still_claimed(current: AttemptDoc, claimed: AttemptDoc) -> bool:
    return current.state == AttemptState.DISPATCHING and current.dispatched_at == claimed.dispatched_at


def plan_dispatched(
    run_id: str,
    attempt_id: str,
    current: Versioned[AttemptDoc],
    claimed: AttemptDoc,
    execution_name: str,
    job_status: JobStatus | None,
) -> Plan | None:
    """Record the started job on the attempt; None when its output was already applied (nothing to record)."""
    if not _still_claimed(current.doc, claimed):
        return None
    running = current.doc.model_copy(
        update={"state": AttemptState.RUNNING, "execution_name": execution_name, "job_status": job_status}
    )
    return Plan(writes=[Write(attempt_path(run_id, attempt_id), running, "replace", current.update_time)])


def plan_launch_refused(
    run_id: str,
    run: Versioned[RunDoc],
    attempt_id: str,
    current: Versioned[AttemptDoc],
    claimed: AttemptDoc,
    reason: str,
    now: datetime,
) -> Plan | None:
    """The launcher can never start this job as configured: end the step now rather than retry forever."""
    if not _still_claimed(current.doc, claimed) or RunStatus(run.doc.status).is_terminal:
        return None
    return _fail_launch(run_id, run, attempt_id, current, reason, claimed.input_generation or 0, now)


def plan_release(run_id: str, attempt_id: str, current: Versioned[AttemptDoc], claimed: AttemptDoc) -> Plan | None:
    """Undo this handler's own claim after its launch failed, so the redelivery can claim the attempt again.

    None when the attempt moved on since (another claim, or an output already applied): nothing to undo.
    """
    doc = current.doc
    if not _still_claimed(doc, claimed):
        return None
    released = doc.model_copy(
        update={"state": AttemptState.SCHEDULED, "dispatched_at": None, "timeout_at": None, "input_generation": None}
    )
    return Plan(writes=[Write(attempt_path(run_id, attempt_id), released, "replace", current.update_time)])


def _no_next_step(run: RunDoc, number: int) -> tuple[str, AttemptDoc]:
    raise AssertionError("a step that ends its run schedules nothing")


# ---------------------------------------------------------------------------------------------------------
# INGEST: .../{attempt_id}/output.json finalized


def rejected_receipt_id(event: ObjectFinalized) -> str:
    """Rejections are keyed by the object version, never by a claimed callback_id they could squat on."""
    return "rejected-" + hashlib.sha256(f"{event.bucket}/{event.name}#{event.generation}".encode()).hexdigest()[:40]


def _receipt(
    event: ObjectFinalized,
    run_id: str | None,
    attempt_id: str | None,
    status: ReceiptStatus,
    settings: Settings,
    now: datetime,
    reason: str | None = None,
) -> ReceiptDoc:
    return ReceiptDoc(
        run_id=run_id,
        attempt_id=attempt_id,
        status=status,
        received_at=now,
        output_uri=gs_uri(event.bucket, event.name),
        output_generation=event.generation,
        expire_at=now + timedelta(days=settings.receipt_retention_days),
        reason=reason,
    )


def reject(event: ObjectFinalized, path: StepObjectPath, reason: str, settings: Settings, now: datetime) -> Plan:
    receipt = _receipt(event, path.run_id, path.attempt_id, ReceiptStatus.REJECTED, settings, now, reason)
    return Plan(writes=[Write(receipt_path(rejected_receipt_id(event)), receipt, "create")])


def output_mismatch(
    event: ObjectFinalized, path: StepObjectPath, output: OutputEnvelope, attempt: AttemptDoc
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


def _step_problem(spec: StepSpec, number: int, output: OutputEnvelope, counts: Counts) -> Problem | None:
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


def plan_ingest(
    event: ObjectFinalized,
    path: StepObjectPath,
    output: OutputEnvelope,
    run: Versioned[RunDoc] | None,
    attempt: Versioned[AttemptDoc] | None,
    next_callback_id: str,
    settings: Settings,
    now: datetime,
) -> Plan:
    """Apply a verified output to its attempt, step and run, or record why it was not applied."""
    if run is None or attempt is None:
        return reject(event, path, f"no run {path.run_id} with attempt {path.attempt_id}", settings, now)
    mismatch = output_mismatch(event, path, output, attempt.doc)
    if mismatch is not None:
        return reject(event, path, mismatch, settings, now)
    doc, current = run.doc, attempt.doc
    if RunStatus(doc.status).is_terminal or not AttemptState(current.state).is_live or doc.current_step != current.step:
        receipt = _receipt(
            event, path.run_id, path.attempt_id, ReceiptStatus.REJECTED, settings, now,
            reason=f"late: attempt is {current.state} and run is {doc.status}; not applied",
        )  # fmt: skip
        return Plan(writes=[Write(receipt_path(output.callback_id), receipt, "create")])

    spec = _snapshot(doc).steps[current.step - 1]
    counts = Counts.of([m.severity for m in output.messages])
    problem = _step_problem(spec, current.step, output, counts)
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
    if status in (EnvelopeStatus.SUCCESS, EnvelopeStatus.FAILED_VALIDATION):
        final_state = AttemptState.COMPLETED
    elif problem is not None and problem.category == ErrorCategory.TIMEOUT:
        final_state = AttemptState.TIMED_OUT
    else:
        final_state = AttemptState.FAILED
    finished = current.model_copy(
        update={"state": final_state, "finished_at": now, "error": problem.message if problem else None}
    )
    cancelled = status == EnvelopeStatus.CANCELLED
    outcome = StepOutcome(current.step, counts, problem, halt=cancelled, cancelled=cancelled)

    def schedule_next(new_run: RunDoc, number: int) -> tuple[str, AttemptDoc]:
        return schedule_attempt(path.run_id, new_run, number, next_callback_id, event.bucket, settings, now)

    new_run, extra, next_id, next_attempt = after_step(path.run_id, doc, outcome, now, schedule_next)
    receipt = _receipt(event, path.run_id, path.attempt_id, ReceiptStatus.PROCESSING, settings, now)
    findings = [
        Write(
            finding_path(path.run_id, f"{path.attempt_id}-{index:04d}"),
            FindingDoc(
                step=current.step,
                index=index,
                severity=m.severity,
                code=m.code,
                message=m.text,
                location=m.location,
            ),
            "upsert",
        )
        for index, m in enumerate(stored)
    ]
    writes = [
        Write(receipt_path(output.callback_id), receipt, "create"),
        Write(attempt_path(path.run_id, path.attempt_id), finished, "replace", attempt.update_time),
        Write(step_path(path.run_id, current.step), step, "upsert"),
        Write(run_path(path.run_id), new_run, "replace", run.update_time),
        *extra,
        *findings,
    ]
    effects = ingest_effects(path.run_id, new_run, step, next_id, next_attempt, event.bucket)
    return Plan(
        writes=writes,
        events=effects.events,
        objects=effects.objects,
        receipt_to_complete=(output.callback_id, receipt),
    )


def ingest_effects(
    run_id: str,
    run: RunDoc,
    step: StepDoc,
    next_id: str | None,
    next_attempt: AttemptDoc | None,
    bucket: str,
) -> Plan:
    """What follows an applied output: the step's event, then the next input.json or the run's end."""
    events = [lifecycle_event(LifecycleType.STEP_COMPLETED, run_id, run, step.ended_at or run.created_at, step)]
    if run.ended_at is not None:
        events.append(lifecycle_event(LifecycleType.RUN_COMPLETED, run_id, run, run.ended_at))
    objects = []
    if next_id is not None and next_attempt is not None and next_attempt.state == AttemptState.SCHEDULED:
        objects.append(input_object(run_id, run, next_id, next_attempt, bucket))
    return Plan(events=events, objects=objects)
