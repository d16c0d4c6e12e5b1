"""What the stages' pure transitions share: the Plan they return, and the step bookkeeping they all do.

A Plan is what a handler commits (all-or-nothing document writes whose preconditions are the dedupe) and then
performs (its Effects: lifecycle events, create-only objects). Effects are recomputed from committed state on a
replay, so a crash between commit and effects is repaired by the redelivery. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jobs.registry import get_validator
from schemas.changes import Effects, NewObject, Versioned, Write, attempt_path, run_path, step_path
from schemas.documents import (
    AttemptDoc,
    Counts,
    ReceiptDoc,
    Retention,
    RunDoc,
    StepDoc,
    StepSpec,
    WorkflowSnapshot,
)
from schemas.enums import AttemptState, ErrorCategory, LifecycleType, RunStatus, StepStatus
from schemas.envelopes import FileRef, InputContext, InputEnvelope, OrgRef, ValidatorRef, WorkflowRef, sha256_hex
from schemas.lifecycle import LifecycleData, LifecycleEvent, StepRef
from schemas.paths import INPUT_NAME, OUTPUT_NAME, attempt_id_for, attempt_prefix, gs_uri
from schemas.settings import Settings


@dataclass(frozen=True)
class PendingReceipt:
    """An applied output's receipt: committed as PROCESSING, marked COMPLETED once the effects are done."""

    callback_id: str
    receipt: ReceiptDoc


@dataclass
class Plan:
    writes: list[Write] = field(default_factory=list)
    effects: Effects = field(default_factory=Effects)
    # LAUNCH: the attempt as this plan claims it (DISPATCHING), for the launch that follows the commit.
    claimed: AttemptDoc | None = None
    # INGEST: the receipt of an applied output, to complete after the effects.
    pending_receipt: PendingReceipt | None = None
    # INGEST: the audit record of an output that was not applied, and why.
    rejection: ReceiptDoc | None = None


@dataclass(frozen=True)
class Problem:
    """Why a submission or a step cannot go on, as the user will read it."""

    category: ErrorCategory
    message: str


@dataclass(frozen=True)
class ScheduledAttempt:
    attempt_id: str
    attempt: AttemptDoc


@dataclass(frozen=True)
class NextAttemptTerms:
    """What scheduling a following step's attempt takes: its fresh random callback_id, and the settings."""

    callback_id: str
    settings: Settings


@dataclass(frozen=True)
class StepOutcome:
    number: int
    counts: Counts
    problem: Problem | None
    halt: bool = False  # end the run whatever the workflow's fail_policy (cancellation, system errors)
    cancelled: bool = False


@dataclass(frozen=True)
class FoldedStep:
    """A finished step folded into its run: the new run, what else to write, and the next attempt if any."""

    run: RunDoc
    writes: list[Write]
    next_attempt: ScheduledAttempt | None


def lifecycle_event(
    event_type: LifecycleType, run_id: str, run: RunDoc, *, time: datetime, step: StepDoc | None = None
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


def snapshot(run: RunDoc) -> WorkflowSnapshot:
    if run.workflow is None:
        raise ValueError("a run refused at intake has no workflow and no steps")
    return run.workflow


def step_spec(run: RunDoc, number: int) -> StepSpec:
    return snapshot(run).steps[number - 1]


def build_input(run_id: str, run: RunDoc, scheduled: ScheduledAttempt) -> InputEnvelope:
    """The input envelope of an attempt. Deterministic: rebuilding it gives the same bytes and sha256."""
    attempt_id, attempt = scheduled.attempt_id, scheduled.attempt
    workflow = snapshot(run)
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
        resource_files=spec.resource_files,
        input_roles=workflow.inputs,
        assertions=spec.assertions,
        prior_steps={key: results for key, results in run.step_results.items() if key != spec.key},
        context=InputContext(
            attempt_id=attempt_id,
            callback_id=attempt.callback_id,
            expected_output_uri=attempt.expected_output_uri,
            execution_bundle_uri=attempt.input_uri.removesuffix(INPUT_NAME),
            timeout_seconds=attempt.timeout_seconds,
        ),
    )


def input_object(run_id: str, run: RunDoc, scheduled: ScheduledAttempt) -> NewObject:
    envelope = build_input(run_id, run, scheduled)
    return NewObject(scheduled.attempt.input_uri, envelope.to_bytes(), chain=scheduled.attempt.launcher == "inline")


def schedule_attempt(
    run_id: str, run: RunDoc, step_number: int, *, callback_id: str, settings: Settings, now: datetime
) -> ScheduledAttempt:
    """The first attempt of a step: its id is deterministic, its callback_id is the caller's random token."""
    spec = step_spec(run, step_number)
    attempt_id = attempt_id_for(step_number, 1)
    prefix = attempt_prefix(run.org, run_id, step_number, spec.key, attempt_id)
    # A submission larger than an inline run should parse goes to a job from the start; the inline time budget
    # catches the rest (DESIGN §9's "inline" is where a validator may run, not where it must).
    small = run.submission is None or run.submission.size_bytes <= settings.inline_max_bytes
    inline = get_validator(spec.validator).mode == "inline" and small
    attempt = AttemptDoc(
        step=step_number,
        step_key=spec.key,
        callback_id=callback_id,
        state=AttemptState.SCHEDULED,
        launcher="inline" if inline else settings.job_launcher,
        input_uri=gs_uri(settings.bucket, prefix + INPUT_NAME),
        input_sha256="",
        expected_output_uri=gs_uri(settings.bucket, prefix + OUTPUT_NAME),
        scheduled_at=now,
        timeout_seconds=spec.timeout_seconds or settings.step_timeout_seconds,
    )
    envelope = build_input(run_id, run, ScheduledAttempt(attempt_id, attempt))
    return ScheduledAttempt(attempt_id, attempt.model_copy(update={"input_sha256": sha256_hex(envelope.to_bytes())}))


def finish_run(run: RunDoc, status: RunStatus, now: datetime) -> RunDoc:
    started = run.started_at or run.created_at
    ended = run.model_copy(
        update={
            "status": status,
            "ended_at": now,
            "duration_ms": max(0, int((now - started).total_seconds() * 1000)),
        }
    )
    return ended.model_copy(update={"purge_due_at": purge_due(ended)})


def purge_due(run: RunDoc) -> datetime | None:
    """When the next retention purge of an ended run's objects is due; None once all of them are purged."""
    if run.ended_at is None:
        return None
    retention = run.workflow.retention if run.workflow else Retention()
    due = []
    if run.purged_at is None:
        due.append(run.ended_at + timedelta(days=retention.submission_days))
    if run.results_purged_at is None and run.workflow is not None:
        due.append(run.ended_at + timedelta(days=retention.results_days))
    return min(due, default=None)


def after_step(
    run_id: str,
    run: RunDoc,
    outcome: StepOutcome,
    *,
    now: datetime,
    next_terms: NextAttemptTerms | None,
) -> FoldedStep:
    """Fold a finished step into the run: schedule the next step, or end the run (skipping what is left).

    `next_terms` may be None only where the outcome halts the run, which schedules nothing.
    """
    workflow = snapshot(run)
    run = run.model_copy(update={"counts": run.counts.plus(outcome.counts)})
    if outcome.problem and run.error_category is None:
        run = run.model_copy(update={"error_category": outcome.problem.category, "error": outcome.problem.message})
    stop = outcome.halt or (outcome.problem is not None and workflow.fail_policy == "stop")
    total = len(workflow.steps)
    if outcome.number < total and not stop:
        if next_terms is None:
            raise ValueError("a step that does not end its run needs the terms of the next step's attempt")
        next_number = outcome.number + 1
        run = run.model_copy(update={"current_step": next_number})
        scheduled = schedule_attempt(
            run_id, run, next_number, callback_id=next_terms.callback_id, settings=next_terms.settings, now=now
        )
        spec = workflow.steps[next_number - 1]
        writes = [
            Write(attempt_path(run_id, scheduled.attempt_id), scheduled.attempt, "create"),
            Write(
                step_path(run_id, next_number), step_doc(spec, next_number, attempt_id=scheduled.attempt_id), "upsert"
            ),
        ]
        return FoldedStep(run, writes, scheduled)
    if outcome.cancelled:
        status = RunStatus.CANCELED
    elif run.error_category is None:
        status = RunStatus.SUCCEEDED
    else:
        status = RunStatus.TIMED_OUT if run.error_category == ErrorCategory.TIMEOUT else RunStatus.FAILED
    run = finish_run(run, status, now)
    skipped = [
        Write(step_path(run_id, n), step_doc(workflow.steps[n - 1], n, status=StepStatus.SKIPPED), "upsert")
        for n in range(outcome.number + 1, total + 1)
        if stop
    ]
    return FoldedStep(run, skipped, None)


def run_write(run_id: str, run: RunDoc, read_at: datetime) -> Write:
    """The run document replaced on the condition that it has not changed since it was read."""
    return Write(run_path(run_id), run, "replace", read_at)


def dispatch_lease_expired(attempt: AttemptDoc, settings: Settings, now: datetime) -> bool:
    """A DISPATCHING claim that never recorded an execution and is older than its lease may be taken over."""
    return (
        attempt.state == AttemptState.DISPATCHING
        and attempt.execution_name is None
        and attempt.dispatched_at is not None
        and attempt.dispatched_at + timedelta(seconds=settings.dispatch_lease_seconds) <= now
    )


def end_attempt(
    run_id: str,
    attempt_id: str,
    *,
    run: Versioned[RunDoc],
    attempt: Versioned[AttemptDoc],
    problem: Problem | None,
    state: AttemptState,
    now: datetime,
    cancelled: bool = False,
    reason: str | None = None,
    **attempt_update: object,
) -> Plan:
    """An attempt ends without an output to apply (it could not start, timed out, its job died, the run was
    canceled): attempt, step and run end saying why, and the steps after it are skipped. `reason` is what the
    attempt and step record; the run records the problem (a cancel is none: the run is CANCELED, not in error)."""
    current, doc = attempt.doc, run.doc
    spec = step_spec(doc, current.step)
    reason = reason or (problem.message if problem else None)
    ended = current.model_copy(update={"state": state, "finished_at": now, "error": reason, **attempt_update})
    step_status = StepStatus.CANCELED if cancelled else StepStatus.FAILED
    step = step_doc(spec, current.step, status=step_status, attempt_id=attempt_id, ended_at=now, error=reason)
    folded = after_step(
        run_id,
        doc.model_copy(update={"started_at": doc.started_at or now}),
        StepOutcome(current.step, Counts(), problem, halt=True, cancelled=cancelled),
        now=now,
        next_terms=None,
    )
    return Plan(
        writes=[
            Write(attempt_path(run_id, attempt_id), ended, "replace", attempt.update_time),
            Write(step_path(run_id, current.step), step, "upsert"),
            run_write(run_id, folded.run, run.update_time),
            *folded.writes,
        ],
        effects=Effects(
            events=[
                lifecycle_event(LifecycleType.STEP_COMPLETED, run_id, folded.run, time=now, step=step),
                lifecycle_event(LifecycleType.RUN_COMPLETED, run_id, folded.run, time=now),
            ]
        ),
    )
