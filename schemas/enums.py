"""Status vocabularies (DESIGN §4). The string values are contracts: never rename them."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


class ErrorCategory(StrEnum):
    VALIDATION_FAILED = "VALIDATION_FAILED"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    TIMEOUT = "TIMEOUT"
    SYSTEM_ERROR = "SYSTEM_ERROR"


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    # The step was running when its run was canceled (issue 10 adds it to DESIGN §4's list).
    CANCELED = "CANCELED"


class AttemptState(StrEnum):
    SCHEDULED = "SCHEDULED"
    DISPATCHING = "DISPATCHING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_live(self) -> bool:
        return self in (AttemptState.SCHEDULED, AttemptState.DISPATCHING, AttemptState.RUNNING)


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ReceiptStatus(StrEnum):
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"


class EnvelopeStatus(StrEnum):
    SUCCESS = "success"
    FAILED_VALIDATION = "failed_validation"
    FAILED_RUNTIME = "failed_runtime"
    CANCELLED = "cancelled"


class Severity(StrEnum):
    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"


class LifecycleType(StrEnum):
    RUN_CREATED = "org.validibot.run.v1.created"
    STEP_STARTED = "org.validibot.step.v1.started"
    STEP_COMPLETED = "org.validibot.step.v1.completed"
    RUN_COMPLETED = "org.validibot.run.v1.completed"


class Role(StrEnum):
    """A member's or an API key's role in one org (DESIGN §14). Each role may do what the ones below it may."""

    VIEWER = "viewer"  # read runs, workflows, artifacts
    EXECUTOR = "executor"  # submit, cancel, rerun
    AUTHOR = "author"  # apply workflows
    ADMIN = "admin"  # members, keys

    def allows(self, needed: Role) -> bool:
        return _ROLE_RANK[self] >= _ROLE_RANK[needed]


_ROLE_RANK = {Role.VIEWER: 0, Role.EXECUTOR: 1, Role.AUTHOR: 2, Role.ADMIN: 3}
