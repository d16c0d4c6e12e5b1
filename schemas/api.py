"""The REST API's bodies (DESIGN §14): what /api/v1 returns and accepts, as pydantic models.

The OpenAPI document at /api/v1/openapi.json is generated from these, and the CLI reads responses with them, so
the document, the server and the client cannot drift apart. Documents are mapped to these explicitly: internal
fields (object uris, attempt ids, signing material) never reach a response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from schemas.documents import FindingDoc, RunDoc, StepDoc, WorkflowDoc
from schemas.enums import ErrorCategory, Role, RunStatus, Severity, StepStatus
from schemas.envelopes import Counts, Location, Metric
from schemas.paths import SLUG_PATTERN


class Body(BaseModel):
    model_config = ConfigDict(use_enum_values=True)


# Problem types a client acts on (RFC 9457 `type`): the first request with this Idempotency-Key is still uploading.
IDEMPOTENCY_IN_PROGRESS = "urn:validibot:problem:idempotency-in-progress"


class Problem(Body):
    """An error, as RFC 9457 problem details (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    # Which fields of the request were wrong, when the request did not validate.
    errors: list[dict[str, Any]] | None = None


class Caller(Body):
    """Who a key is: its org and role, and the id it is listed and revoked by."""

    org: str
    role: Role
    key_id: str
    name: str


class ArtifactOut(Body):
    name: str
    size_bytes: int
    sha256: str
    mime_type: str | None = None
    # This API's own path for the file (GET, the same credentials).
    href: str


class StepOut(Body):
    number: int
    key: str
    name: str
    validator: str
    status: StepStatus
    started_at: datetime | None = None
    ended_at: datetime | None = None
    counts: Counts
    metrics: list[Metric]
    artifacts: list[ArtifactOut]
    error: str | None = None


class RunOut(Body):
    run_id: str
    org: str
    workflow: str
    workflow_version: int | None = None
    status: RunStatus
    submission_name: str
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    counts: Counts
    error_category: ErrorCategory | None = None
    error: str | None = None
    rerun_of: str | None = None
    href: str


class RunDetail(RunOut):
    steps: list[StepOut]


class RunPage(Body):
    items: list[RunOut]
    # Pass as `cursor` for the next page; null on the last one.
    next_cursor: str | None = None


class FindingOut(Body):
    step: int
    severity: Severity
    code: str
    message: str
    location: Location | None = None


class FindingPage(Body):
    items: list[FindingOut]
    next_cursor: str | None = None


class Accepted(Body):
    """A submission taken: the run is created from it within moments (GET `href` is 404 until then)."""

    run_id: str
    status: str = "ACCEPTED"
    href: str


class Canceled(Body):
    run_id: str
    status: RunStatus


class WorkflowStepOut(Body):
    key: str
    name: str
    validator: str
    timeout_seconds: int | None = None
    assertions: int = 0


class WorkflowOut(Body):
    slug: str
    name: str
    version: int
    applied_at: datetime | None = None
    fail_policy: str
    steps: list[WorkflowStepOut]


class WorkflowList(Body):
    items: list[WorkflowOut]


class WorkflowApplied(Body):
    slug: str
    version: int
    changed: bool


class RunsQuery(Body):
    status: RunStatus | None = None
    workflow: str | None = Field(default=None, pattern=f"^{SLUG_PATTERN}$")
    cursor: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=50, ge=1, le=200)


class PageQuery(Body):
    cursor: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=500, ge=1, le=1000)


def run_href(org: str, run_id: str) -> str:
    return f"/api/v1/orgs/{org}/runs/{run_id}"


def run_out(run_id: str, run: RunDoc) -> RunOut:
    return RunOut(
        run_id=run_id,
        org=run.org,
        workflow=run.workflow_slug,
        workflow_version=run.workflow.version if run.workflow else None,
        status=run.status,
        submission_name=run.submission_name,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        duration_ms=run.duration_ms,
        counts=run.counts,
        error_category=run.error_category,
        error=run.error,
        rerun_of=run.rerun_of,
        href=run_href(run.org, run_id),
    )


def step_out(org: str, run_id: str, step: StepDoc) -> StepOut:
    return StepOut(
        number=step.number,
        key=step.step_key,
        name=step.name,
        validator=step.validator,
        status=step.status,
        started_at=step.started_at,
        ended_at=step.ended_at,
        counts=step.counts,
        metrics=step.metrics,
        artifacts=[
            ArtifactOut(
                name=a.name,
                size_bytes=a.size_bytes,
                sha256=a.sha256,
                mime_type=a.mime_type,
                href=f"{run_href(org, run_id)}/artifacts/{step.number}/{quote(a.name, safe='')}",
            )
            for a in step.artifacts
        ],
        error=step.error,
    )


def finding_out(finding: FindingDoc) -> FindingOut:
    return FindingOut(
        step=finding.step,
        severity=finding.severity,
        code=finding.code,
        message=finding.message,
        location=finding.location,
    )


def workflow_out(workflow: WorkflowDoc) -> WorkflowOut:
    return WorkflowOut(
        slug=workflow.slug,
        name=workflow.name,
        version=workflow.version,
        applied_at=workflow.applied_at,
        fail_policy=workflow.fail_policy,
        steps=[
            WorkflowStepOut(
                key=s.key,
                name=s.name,
                validator=s.validator,
                timeout_seconds=s.timeout_seconds,
                assertions=len(s.assertions),
            )
            for s in workflow.steps
        ],
    )
