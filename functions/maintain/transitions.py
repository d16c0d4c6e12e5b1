"""MAINTAIN's decisions (DESIGN §13): which attempts have timed out, lost their claim or their execution, and
which run objects are past retention. Each plan is committed on the update times it was decided from, so two
ticks at once make each change once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from functions.common import Plan, Problem, dispatch_lease_expired, end_attempt, purge_due, run_write, step_spec
from schemas.changes import Versioned, Write, attempt_path
from schemas.documents import AttemptDoc, Retention, RunDoc
from schemas.enums import AttemptState, ErrorCategory, JobStatus, RunStatus
from schemas.settings import Settings


def _live(run: RunDoc, attempt: AttemptDoc) -> bool:
    return not RunStatus(run.status).is_terminal and run.current_step == attempt.step


def _end(
    run_id: str,
    attempt_id: str,
    *,
    run: Versioned[RunDoc],
    attempt: Versioned[AttemptDoc],
    category: ErrorCategory,
    reason: str,
    state: AttemptState,
    now: datetime,
    **update: object,
) -> Plan:
    """End the attempt saying `reason`; the run's error names the step it happened to."""
    step = f"step {attempt.doc.step} '{step_spec(run.doc, attempt.doc.step).name}'"
    return end_attempt(
        run_id,
        attempt_id,
        run=run,
        attempt=attempt,
        problem=Problem(category, f"{step}: {reason}"),
        state=state,
        now=now,
        reason=reason,
        **update,
    )


def timed_out(attempt: AttemptDoc, settings: Settings, now: datetime) -> bool:
    """Claimed or running, and past its timeout by more than the grace a job gets to deliver its own verdict."""
    return (
        attempt.state in (AttemptState.DISPATCHING, AttemptState.RUNNING)
        and attempt.timeout_at is not None
        and attempt.timeout_at + timedelta(seconds=settings.timeout_grace_seconds) < now
    )


def plan_timeout(
    run_id: str,
    attempt_id: str,
    *,
    run: Versioned[RunDoc],
    attempt: Versioned[AttemptDoc],
    settings: Settings,
    now: datetime,
) -> Plan | None:
    """The attempt, its step and its run end TIMED_OUT; None when it is not (or no longer) timed out."""
    if not _live(run.doc, attempt.doc) or not timed_out(attempt.doc, settings, now):
        return None
    reason = f"ran past its {attempt.doc.timeout_seconds} s timeout without a result and was stopped"
    return _end(
        run_id,
        attempt_id,
        run=run,
        attempt=attempt,
        category=ErrorCategory.TIMEOUT,
        reason=reason,
        state=AttemptState.TIMED_OUT,
        now=now,
    )


def plan_execution_ended(
    run_id: str,
    attempt_id: str,
    *,
    run: Versioned[RunDoc],
    attempt: Versioned[AttemptDoc],
    job_status: JobStatus,
    message: str | None,
    now: datetime,
) -> Plan | None:
    """A job execution that ended (`job_status`) without writing output.json: the step fails with the execution's
    own words, `message` (a cancelled execution cancels the run). None when the attempt is no longer running."""
    if not _live(run.doc, attempt.doc) or attempt.doc.state != AttemptState.RUNNING:
        return None
    reason = message or f"the job's execution ended {job_status} without writing a result"
    return _end(
        run_id,
        attempt_id,
        run=run,
        attempt=attempt,
        category=ErrorCategory.RUNTIME_ERROR,
        reason=reason,
        state=AttemptState.FAILED,
        now=now,
        cancelled=job_status == JobStatus.CANCELLED,
        job_status=job_status,
    )


def plan_job_status(
    run_id: str, attempt_id: str, *, attempt: Versioned[AttemptDoc], job_status: JobStatus
) -> Plan | None:
    """Record a running execution's status when it changed (PENDING → RUNNING)."""
    if attempt.doc.state != AttemptState.RUNNING or attempt.doc.job_status == job_status:
        return None
    refreshed = attempt.doc.model_copy(update={"job_status": job_status})
    return Plan(writes=[Write(attempt_path(run_id, attempt_id), refreshed, "replace", attempt.update_time)])


def plan_lease_expired(
    run_id: str,
    attempt_id: str,
    *,
    run: Versioned[RunDoc],
    attempt: Versioned[AttemptDoc],
    settings: Settings,
    now: datetime,
) -> Plan | None:
    """A claim whose function was lost before it recorded a launch: released to the queue for another claim, or
    failed once it has had max_dispatch_tries. None when the lease has not run out."""
    if not _live(run.doc, attempt.doc) or not dispatch_lease_expired(attempt.doc, settings, now):
        return None
    if attempt.doc.dispatch_tries >= settings.max_dispatch_tries:
        reason = f"no launch took hold in {attempt.doc.dispatch_tries} claims (VALIDIBOT_MAX_DISPATCH_TRIES)"
        return _end(
            run_id,
            attempt_id,
            run=run,
            attempt=attempt,
            category=ErrorCategory.SYSTEM_ERROR,
            reason=reason,
            state=AttemptState.FAILED,
            now=now,
        )
    released = attempt.doc.model_copy(
        update={
            "state": AttemptState.SCHEDULED,
            "dispatched_at": None,
            "timeout_at": None,
            "input_generation": None,
            "queued_at": attempt.doc.queued_at or now,
        }
    )
    return Plan(writes=[Write(attempt_path(run_id, attempt_id), released, "replace", attempt.update_time)])


@dataclass(frozen=True)
class PurgeDue:
    """What retention deletes of an ended run now."""

    submission: bool
    results: bool

    def __bool__(self) -> bool:
        return self.submission or self.results


def purge_due_now(run: RunDoc, now: datetime) -> PurgeDue:
    if run.ended_at is None:
        return PurgeDue(False, False)
    retention = run.workflow.retention if run.workflow else Retention()
    return PurgeDue(
        submission=run.purged_at is None and run.ended_at + timedelta(days=retention.submission_days) <= now,
        results=run.results_purged_at is None
        and run.workflow is not None
        and run.ended_at + timedelta(days=retention.results_days) <= now,
    )


def plan_purged(run_id: str, run: Versioned[RunDoc], due: PurgeDue, *, now: datetime) -> Plan:
    """Record what retention deleted; the run keeps its verdict, counts and findings."""
    doc = run.doc
    purged = doc.model_copy(
        update={
            "purged_at": now if due.submission else doc.purged_at,
            "results_purged_at": now if due.results else doc.results_purged_at,
        }
    )
    return Plan(
        writes=[run_write(run_id, purged.model_copy(update={"purge_due_at": purge_due(purged)}), run.update_time)]
    )
