"""Firestore documents (DESIGN §4). Field names are contracts read by the web, the CLI and operators."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.enums import (
    AttemptState,
    ErrorCategory,
    JobStatus,
    ReceiptStatus,
    Role,
    RunStatus,
    Severity,
    StepStatus,
)
from schemas.envelopes import Artifact, AssertionSpec, Counts, FileRef, InputRole, Location, Metric
from schemas.paths import SLUG_PATTERN


class Document(BaseModel):
    # Enum values are stored as their plain strings; unknown fields written by newer code are tolerated.
    model_config = ConfigDict(use_enum_values=True, extra="ignore")

    def to_firestore(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


class StepSpec(Document):
    key: str = Field(pattern=f"^{SLUG_PATTERN}$")
    name: str
    validator: str
    config: dict[str, Any] = {}
    timeout_seconds: int | None = Field(default=None, gt=0)
    assertions: list[AssertionSpec] = []
    # The step's resource files, pinned when the workflow was applied (name = its path relative to the file).
    resource_files: list[FileRef] = []


class WorkflowLimits(Document):
    max_submission_bytes: int | None = Field(default=None, gt=0)


class Retention(Document):
    """How long a run's objects are kept after it ends (DESIGN §12); the run keeps its verdict either way."""

    # 0: the submission is deleted by the first maintenance tick after the run ends.
    submission_days: int = Field(default=30, ge=0)
    # input.json, output.json and artifacts.
    results_days: int = Field(default=365, ge=0)


class WorkflowDoc(Document):
    org: str
    slug: str = Field(pattern=f"^{SLUG_PATTERN}$")
    name: str
    version: int = 1
    steps: list[StepSpec] = Field(min_length=1, max_length=99)
    fail_policy: Literal["stop", "continue"] = "stop"
    retention: Retention = Retention()
    limits: WorkflowLimits = WorkflowLimits()
    # Roles a .zip submission is unpacked into, in the order declared (a list: Firestore keeps a map's keys sorted).
    inputs: list[InputRole] = []
    # The sha256 of the applied content: applying the same content again is a no-op.
    content_sha256: str | None = None
    applied_at: datetime | None = None


class WorkflowSnapshot(Document):
    id: str
    slug: str
    version: int
    name: str
    fail_policy: Literal["stop", "continue"] = "stop"
    steps: list[StepSpec]
    retention: Retention = Retention()
    inputs: list[InputRole] = []


class OrgDoc(Document):
    name: str
    created_at: datetime


class Submission(Document):
    name: str
    uri: str
    generation: int
    size_bytes: int
    sha256: str
    content_type: str | None = None


class RunDoc(Document):
    org: str
    org_name: str
    workflow: WorkflowSnapshot | None
    workflow_slug: str
    status: RunStatus
    source: str
    submission: Submission | None = None
    submission_name: str
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    current_step: int | None = None
    counts: Counts = Counts()
    error_category: ErrorCategory | None = None
    error: str | None = None
    # Each finished step's results by its key (metrics by name, and outputs), for later steps' assertions.
    step_results: dict[str, dict[str, Any]] = {}
    # The run this one re-runs (same submission bytes), when it is a re-run.
    rerun_of: str | None = None
    # Retention (DESIGN §13): when the next purge of this run's objects is due, and what was purged when.
    purge_due_at: datetime | None = None
    purged_at: datetime | None = None
    results_purged_at: datetime | None = None


class StepDoc(Document):
    number: int
    step_key: str
    name: str
    validator: str
    status: StepStatus = StepStatus.PENDING
    attempt_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    counts: Counts = Counts()
    metrics: list[Metric] = []
    artifacts: list[Artifact] = []
    findings_stored: int = 0
    error: str | None = None


class AttemptDoc(Document):
    step: int
    step_key: str
    callback_id: str
    state: AttemptState
    launcher: str
    input_uri: str
    input_generation: int | None = None
    input_sha256: str
    expected_output_uri: str
    execution_name: str | None = None
    job_status: JobStatus | None = None
    scheduled_at: datetime
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None
    timeout_at: datetime | None = None
    timeout_seconds: int
    error: str | None = None
    # Set while the launcher is full: the maintenance tick launches queued attempts oldest first.
    queued_at: datetime | None = None
    # Claims so far: a claim whose lease runs out is released for another, up to VALIDIBOT_MAX_DISPATCH_TRIES.
    dispatch_tries: int = 0


class FindingDoc(Document):
    step: int
    index: int
    severity: Severity
    code: str
    message: str
    location: Location | None = None


class ReceiptDoc(Document):
    run_id: str | None
    attempt_id: str | None
    status: ReceiptStatus
    received_at: datetime
    output_uri: str
    output_generation: int
    expire_at: datetime
    reason: str | None = None


class UserDoc(Document):
    """A person who signs in to the web (`users/{user_id}`); the id is derived from the email (schemas.access)."""

    email: str
    # argon2id, in its PHC string form (parameters and salt included): never the password.
    password_hash: str
    created_at: datetime
    # The orgs this user is a member of, as the landing page lists them; each membership's role is in
    # orgs/{org}/members/{user_id}, which every request checks.
    orgs: list[str] = []
    failed_signins: int = 0
    locked_until: datetime | None = None
    # Sessions signed before this time are void: set when the password is (re)set.
    sessions_valid_after: datetime | None = None


class MemberDoc(Document):
    """`orgs/{org}/members/{user_id}`: the user's role in that org."""

    email: str
    role: Role
    created_at: datetime


class ApiKeyDoc(Document):
    """`api_keys/{sha256(key)}`: the key itself is shown once and stored nowhere."""

    org: str
    role: Role
    name: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class IdempotencyDoc(Document):
    """`idempotency/{sha256(key hash, Idempotency-Key)}`: the submission a key's Idempotency-Key made, for replays.
    `run_id` is None while the first request is still uploading."""

    org: str
    request_sha256: str
    created_at: datetime
    run_id: str | None = None
    # Firestore's TTL policy on this field deletes the record (DESIGN §15); replays are honoured until then.
    expires_at: datetime
