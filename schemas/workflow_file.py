"""A workflow as its authors write it (DESIGN §12): YAML or JSON, checked by this model, whose JSON Schema
`validibot workflows schema` publishes. Field names are contracts."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.documents import Retention, WorkflowLimits
from schemas.envelopes import AssertionSpec
from schemas.paths import SLUG_PATTERN

# The runtime's own roles: the single file of a one-file submission, and the zip a bundle came in.
RESERVED_ROLES = ("primary", "bundle")


class Authored(BaseModel):
    # A misspelt key is an error, not something silently ignored.
    model_config = ConfigDict(extra="forbid")


class StepFile(Authored):
    key: str = Field(pattern=f"^{SLUG_PATTERN}$", description="unique in the workflow; later steps' `steps.<key>`")
    name: str = Field(min_length=1, max_length=200)
    validator: str = Field(description="a validator id: json-schema, energyplus, fmu, ...")
    timeout_seconds: int | None = Field(default=None, gt=0)
    config: dict[str, Any] = Field(
        default={}, description="the validator's configuration; resource paths are relative to the workflow file"
    )
    assertions: list[AssertionSpec] = Field(default=[], max_length=100)


class WorkflowFile(Authored):
    org: str = Field(pattern=f"^{SLUG_PATTERN}$")
    slug: str = Field(pattern=f"^{SLUG_PATTERN}$")
    name: str = Field(min_length=1, max_length=200)
    fail_policy: Literal["stop", "continue"] = "stop"
    retention: Retention = Retention()
    limits: WorkflowLimits = WorkflowLimits()
    inputs: dict[str, list[str]] = Field(
        default={}, description="roles a .zip submission is unpacked into, each with its members' glob patterns"
    )
    steps: list[StepFile] = Field(min_length=1, max_length=99)

    @field_validator("inputs")
    @classmethod
    def _roles_are_names(cls, inputs: dict[str, list[str]]) -> dict[str, list[str]]:
        for role in inputs:
            if not re.fullmatch(SLUG_PATTERN, role) or role in RESERVED_ROLES:
                raise ValueError(
                    f"{role!r} is not a role name (lowercase, digits, dashes; not {', '.join(RESERVED_ROLES)})"
                )
        return inputs
