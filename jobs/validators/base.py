"""The interface every validator implements, whether it runs inline or as a job."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from schemas.enums import EnvelopeStatus, Severity
from schemas.envelopes import FileRef, Message, Metric

# Seconds kept back from a step's timeout for reading an engine's results and storing artifacts and output.json.
REPORTING_MARGIN_SECONDS = 5


class ConfigError(ValueError):
    """A step's configuration this validator cannot use."""


class OverBudget(Exception):
    """An inline validation outlived its VALIDIBOT_INLINE_BUDGET_SECONDS: the step is handed to a job instead."""


@dataclass(frozen=True)
class InputFile:
    ref: FileRef
    path: Path


@dataclass(frozen=True)
class ValidationContext:
    files: list[InputFile]
    inputs: dict[str, Any]
    workdir: Path
    timeout_seconds: int
    # time.monotonic() at which the step's time is up; set when the job started, downloads included.
    deadline: float
    # time.monotonic() past which an inline run gives the step up to a job; None in a job.
    budget_deadline: float | None = None
    # The step's resource files, downloaded pinned and verified: by name (their path relative to the workflow file).
    resources: dict[str, Path] = field(default_factory=dict)
    # The role of the file the validator checks: "primary" for one file; a bundle's first declared role otherwise.
    primary_role: str = "primary"

    def check_budget(self) -> None:
        """Validators that can run long call this now and then: past an inline budget it raises OverBudget."""
        if self.budget_deadline is not None and time.monotonic() > self.budget_deadline:
            raise OverBudget("still validating when the inline time budget ran out")

    def seconds_left(self) -> float:
        """What a validator's engine may use: the step's time left, less what reporting the result takes."""
        return self.deadline - time.monotonic() - REPORTING_MARGIN_SECONDS

    def primary(self) -> InputFile:
        found = self.file(self.primary_role)
        if found is None:
            raise ConfigError(f"the submission has no {self.primary_role} file")
        return found

    def file(self, role: str) -> InputFile | None:
        """The input file in `role`, if the submission has one (a bundle's optional roles may be empty)."""
        return next((f for f in self.files if f.ref.role == role), None)


@dataclass(frozen=True)
class ArtifactFile:
    """A file the validator made in its workdir, for the runtime to store beside output.json."""

    path: Path
    mime_type: str


@dataclass
class ValidationResult:
    messages: list[Message] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactFile] = field(default_factory=list)
    runtime_error: str | None = None
    timed_out: bool = False
    # The submission itself was refused (a bundle that cannot be unpacked safely): the finding says why.
    input_refused: bool = False

    @property
    def status(self) -> EnvelopeStatus:
        if self.runtime_error is not None:
            return EnvelopeStatus.FAILED_RUNTIME
        if any(m.severity == Severity.ERROR for m in self.messages):
            return EnvelopeStatus.FAILED_VALIDATION
        return EnvelopeStatus.SUCCESS


class Validator(Protocol):
    id: ClassVar[str]
    type: ClassVar[str]
    version: ClassVar[str]
    mode: ClassVar[Literal["inline", "job"]]
    config_model: ClassVar[type[BaseModel]]

    def validate(self, context: ValidationContext) -> ValidationResult: ...


def parse_config(validator: Validator, config: dict[str, Any]) -> BaseModel:
    """The step config as the validator's typed model; ConfigError says what is wrong with it."""
    try:
        return validator.config_model.model_validate(config)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration for validator {validator.id!r}: {exc}") from exc
