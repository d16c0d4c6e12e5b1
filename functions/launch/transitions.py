"""LAUNCH's decisions: .../{attempt_id}/input.json finalized → claim the attempt, and record what the launch did."""

from __future__ import annotations

from datetime import datetime, timedelta

from functions.common import (
    Plan,
    Problem,
    dispatch_lease_expired,
    end_attempt,
    lifecycle_event,
    run_write,
    step_doc,
    step_spec,
)
from schemas.changes import Effects, Versioned, Write, attempt_path, step_path
from schemas.documents import AttemptDoc, RunDoc
from schemas.enums import AttemptState, ErrorCategory, JobStatus, LifecycleType, RunStatus, StepStatus
from schemas.settings import Settings


def plan_launch(
    run_id: str,
    attempt_id: str,
    *,
    run: Versioned[RunDoc],
    attempt: Versioned[AttemptDoc],
    input_generation: int,
    input_problem: str | None,
    settings: Settings,
    now: datetime,
) -> Plan | None:
    """Claim a SCHEDULED attempt (or a DISPATCHING one whose lease ran out). None: nothing to do.

    With an `input_problem` (input.json unreadable, tampered or gone) the step fails instead of being claimed.
    """
    current, doc = attempt.doc, run.doc
    if RunStatus(doc.status).is_terminal or doc.current_step != current.step:
        return None
    if not claimable(current, settings=settings, now=now):
        return None
    if current.dispatch_tries >= settings.max_dispatch_tries:
        # Every launch so far failed (each raised, released its claim and was tried again): stop trying.
        input_problem = (
            f"no launch took hold in {current.dispatch_tries} claims (VALIDIBOT_MAX_DISPATCH_TRIES); operators have "
            "the logs"
        )
    if input_problem is not None:
        return fail_launch(
            run_id,
            attempt_id,
            run=run,
            attempt=attempt,
            reason=input_problem,
            input_generation=input_generation,
            now=now,
        )
    spec = step_spec(doc, current.step)
    claimed = current.model_copy(
        update={
            "state": AttemptState.DISPATCHING,
            "input_generation": input_generation,
            "dispatched_at": now,
            "timeout_at": now + timedelta(seconds=current.timeout_seconds),
            "dispatch_tries": current.dispatch_tries + 1,
        }
    )
    step = step_doc(spec, current.step, status=StepStatus.RUNNING, attempt_id=attempt_id, started_at=now)
    new_run = doc.model_copy(update={"status": RunStatus.RUNNING, "started_at": doc.started_at or now})
    return Plan(
        writes=[
            Write(attempt_path(run_id, attempt_id), claimed, "replace", attempt.update_time),
            Write(step_path(run_id, current.step), step, "upsert"),
            run_write(run_id, new_run, run.update_time),
        ],
        effects=Effects(events=[lifecycle_event(LifecycleType.STEP_STARTED, run_id, new_run, time=now, step=step)]),
        claimed=claimed,
    )


def claimable(attempt: AttemptDoc, *, settings: Settings, now: datetime) -> bool:
    """Whether a launch may claim the attempt: still SCHEDULED, or a DISPATCHING claim whose lease ran out. Anything
    else is a duplicate delivery, known from the attempt alone (a chained run's late input.json event)."""
    return attempt.state == AttemptState.SCHEDULED or dispatch_lease_expired(attempt, settings, now)


def fail_launch(
    run_id: str,
    attempt_id: str,
    *,
    run: Versioned[RunDoc],
    attempt: Versioned[AttemptDoc],
    reason: str,
    input_generation: int,
    now: datetime,
) -> Plan:
    """The step could not be started at all: the attempt and the run end with a SYSTEM_ERROR saying why."""
    spec = step_spec(run.doc, attempt.doc.step)
    return end_attempt(
        run_id,
        attempt_id,
        run=run,
        attempt=attempt,
        problem=Problem(ErrorCategory.SYSTEM_ERROR, f"step {attempt.doc.step} '{spec.name}': {reason}"),
        state=AttemptState.FAILED,
        now=now,
        reason=reason,
        input_generation=input_generation,
    )


def still_claimed(current: AttemptDoc, claimed: AttemptDoc) -> bool:
    """The attempt is still held by the claim this handler made (not released, taken over or finished since)."""
    return current.state == AttemptState.DISPATCHING and current.dispatched_at == claimed.dispatched_at


def plan_dispatched(
    run_id: str,
    attempt_id: str,
    *,
    current: Versioned[AttemptDoc],
    claimed: AttemptDoc,
    execution_name: str,
    job_status: JobStatus | None,
) -> Plan | None:
    """Record the started job on the attempt; None when its output was already applied (nothing to record)."""
    if not still_claimed(current.doc, claimed):
        return None
    running = current.doc.model_copy(
        update={"state": AttemptState.RUNNING, "execution_name": execution_name, "job_status": job_status}
    )
    return Plan(writes=[Write(attempt_path(run_id, attempt_id), running, "replace", current.update_time)])


def plan_handed_off(
    run_id: str, attempt_id: str, *, current: Versioned[AttemptDoc], claimed: AttemptDoc, launcher: str
) -> Plan | None:
    """An inline run gave its step up: the attempt, still claimed, now belongs to the job launcher, so a redelivery
    after a busy launcher goes straight to the job instead of spending the inline budget again."""
    if not still_claimed(current.doc, claimed):
        return None
    handed = current.doc.model_copy(update={"launcher": launcher})
    return Plan(
        writes=[Write(attempt_path(run_id, attempt_id), handed, "replace", current.update_time)], claimed=handed
    )


def plan_launch_refused(
    run_id: str,
    attempt_id: str,
    *,
    run: Versioned[RunDoc],
    current: Versioned[AttemptDoc],
    claimed: AttemptDoc,
    reason: str,
    now: datetime,
) -> Plan | None:
    """The launcher can never start this job as configured: end the step now rather than retry forever."""
    if not still_claimed(current.doc, claimed) or RunStatus(run.doc.status).is_terminal:
        return None
    return fail_launch(
        run_id,
        attempt_id,
        run=run,
        attempt=current,
        reason=reason,
        input_generation=claimed.input_generation or 0,
        now=now,
    )


def plan_release(
    run_id: str,
    attempt_id: str,
    *,
    current: Versioned[AttemptDoc],
    claimed: AttemptDoc,
    queued_at: datetime | None = None,
) -> Plan | None:
    """Undo this handler's own claim after its launch failed, so the attempt can be claimed again: by the
    redelivery the raise asks for, or (`queued_at`, the launcher was full) by the maintenance tick.

    None when the attempt moved on since (another claim, or an output already applied): nothing to undo.
    """
    doc = current.doc
    if not still_claimed(doc, claimed):
        return None
    released = doc.model_copy(
        update={
            "state": AttemptState.SCHEDULED,
            "dispatched_at": None,
            "timeout_at": None,
            "input_generation": None,
            # A launcher that was only full started nothing: that claim does not count against the attempt's tries
            # (a fault does, so an attempt whose launch always fails ends at VALIDIBOT_MAX_DISPATCH_TRIES).
            "dispatch_tries": doc.dispatch_tries - 1 if queued_at is not None else doc.dispatch_tries,
            # Queued again keeps its place: the tick launches queued attempts oldest first.
            "queued_at": doc.queued_at or queued_at,
        }
    )
    return Plan(writes=[Write(attempt_path(run_id, attempt_id), released, "replace", current.update_time)])
