"""INTAKE's decisions: inbox/{org}/{workflow}/{filename} finalized → a run, its steps and its first attempt."""

from __future__ import annotations

from datetime import datetime

from functions.common import (
    Plan,
    Problem,
    ScheduledAttempt,
    finish_run,
    input_object,
    lifecycle_event,
    schedule_attempt,
    step_doc,
)
from jobs.registry import UnknownValidator, get_validator
from jobs.validators.base import ConfigError, parse_config
from schemas.changes import Effects, Write, attempt_path, run_path, step_path
from schemas.documents import AttemptDoc, OrgDoc, RunDoc, Submission, WorkflowDoc, WorkflowSnapshot
from schemas.enums import AttemptState, ErrorCategory, LifecycleType, RunStatus
from schemas.lifecycle import LifecycleEvent
from schemas.objects import ObjectFinalized
from schemas.paths import RERUN_OF_METADATA_KEY, InboxPath, UnsafeName, attempt_id_for, check_filename, gs_uri, is_slug
from schemas.settings import Settings


def intake_problem(
    path: InboxPath,
    event: ObjectFinalized,
    *,
    org: OrgDoc | None,
    workflow: WorkflowDoc | None,
    settings: Settings,
) -> Problem | None:
    """Everything that can refuse a submission before its bytes are read."""
    if not is_slug(path.org) or org is None:
        return Problem(ErrorCategory.VALIDATION_FAILED, f"unknown organization {path.org!r}")
    if not path.workflow:
        return Problem(
            ErrorCategory.VALIDATION_FAILED,
            f"the file is not in a workflow's folder; upload to inbox/{path.org}/<workflow>/{path.filename}",
        )
    if not is_slug(path.workflow) or workflow is None:
        return Problem(
            ErrorCategory.VALIDATION_FAILED,
            f"organization {path.org!r} has no workflow {path.workflow!r}; upload to inbox/{path.org}/<workflow>/",
        )
    try:
        check_filename(path.filename, settings.max_filename_bytes)
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
    *,
    org: OrgDoc | None,
    workflow: WorkflowDoc | None,
    submission: Submission | None,
    problem: Problem | None,
    callback_id: str,
    settings: Settings,
    now: datetime,
    rerun_of: str | None = None,
) -> Plan:
    """A new run: refused at once (one FAILED run document), or created with its steps and first attempt."""
    run = RunDoc(
        rerun_of=rerun_of,
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
        run = finish_run(
            run.model_copy(update={"error_category": problem.category, "error": problem.message}),
            RunStatus.FAILED,
            now,
        )
        return Plan(writes=[Write(run_path(run_id), run, "create")], effects=Effects(events=intake_events(run_id, run)))

    run = run.model_copy(
        update={
            # Every field the snapshot shares with the version is copied, so a new one cannot be forgotten here.
            "workflow": WorkflowSnapshot.model_validate(
                {**workflow.model_dump(), "id": f"{workflow.org}.{workflow.slug}"}
            ),
            "current_step": 1,
        }
    )
    first = schedule_attempt(run_id, run, 1, callback_id=callback_id, settings=settings, now=now)
    steps = [
        step_doc(spec, n, attempt_id=first.attempt_id if n == 1 else None)
        for n, spec in enumerate(workflow.steps, start=1)
    ]
    writes = [
        Write(run_path(run_id), run, "create"),
        *(Write(step_path(run_id, s.number), s, "create") for s in steps),
        Write(attempt_path(run_id, first.attempt_id), first.attempt, "create"),
    ]
    return Plan(
        writes=writes,
        effects=Effects(events=intake_events(run_id, run), objects=[input_object(run_id, run, first)]),
    )


def intake_events(run_id: str, run: RunDoc) -> list[LifecycleEvent]:
    events = [lifecycle_event(LifecycleType.RUN_CREATED, run_id, run, time=run.created_at)]
    if run.ended_at is not None:
        events.append(lifecycle_event(LifecycleType.RUN_COMPLETED, run_id, run, time=run.ended_at))
    return events


def intake_replay(run_id: str, run: RunDoc, first_attempt: AttemptDoc | None) -> Effects:
    """Effects of an intake whose commit landed but whose effects may not have (a crash in between)."""
    objects = []
    if first_attempt is not None and first_attempt.state == AttemptState.SCHEDULED:
        objects.append(input_object(run_id, run, ScheduledAttempt(attempt_id_for(1, 1), first_attempt)))
    return Effects(events=intake_events(run_id, run), objects=objects)


def rerun_link(
    event: ObjectFinalized, path: InboxPath, submission: Submission | None, original: RunDoc | None
) -> str | None:
    """The run this upload says it re-runs, believed only when that run is of the same org and its submission
    has the same bytes: the inbox is writable by users, so the claim alone proves nothing."""
    claimed = event.metadata.get(RERUN_OF_METADATA_KEY)
    if claimed is None or submission is None or original is None or original.submission is None:
        return None
    same = original.org == path.org and original.submission.sha256 == submission.sha256
    return claimed if same else None
