"""Lifecycle CloudEvents for downstream subscribers (DESIGN §8)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from schemas.documents import Counts
from schemas.enums import ErrorCategory, LifecycleType, RunStatus, StepStatus

EVENT_SOURCE = "//validibot.org/pipeline"


class StepRef(BaseModel):
    model_config = ConfigDict(use_enum_values=True)
    number: int
    key: str
    status: StepStatus


class LifecycleData(BaseModel):
    """The JSON body of every lifecycle event: enough to act on without reading Firestore."""

    model_config = ConfigDict(use_enum_values=True)
    run_id: str
    org: str
    workflow: str
    status: RunStatus
    step: StepRef | None = None
    counts: Counts
    error_category: ErrorCategory | None = None
    error: str | None = None


class LifecycleEvent(BaseModel):
    model_config = ConfigDict(use_enum_values=True)
    type: LifecycleType
    time: datetime
    data: LifecycleData

    @property
    def id(self) -> str:
        """Deterministic, so a republished event (after a redelivery) dedupes downstream."""
        base = f"{self.data.run_id}:{self.type}"
        return f"{base}:{self.data.step.number:02d}" if self.data.step else base

    @property
    def subject(self) -> str:
        return f"runs/{self.data.run_id}"
