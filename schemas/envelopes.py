"""Input and output envelopes (DESIGN §7): the only contract between the pipeline and a validator."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.enums import EnvelopeStatus, Severity
from schemas.paths import SLUG_PATTERN

# The longest assertion expression (or message template) a workflow may hold: CEL is cheap per character.
MAX_ASSERTION_CHARS = 2000

INPUT_SCHEMA_VERSION = "validibot.input.v1"
# The message code of a failed_runtime output whose validator ran out of time: the step ends TIMED_OUT.
TIMEOUT_CODE = "timeout"
RUNTIME_CODE = "runtime"
OUTPUT_SCHEMA_VERSION = "validibot.output.v1"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidatorRef(Strict):
    id: str
    type: str
    version: str


class OrgRef(Strict):
    id: str
    name: str


class WorkflowRef(Strict):
    id: str
    step_key: str
    step_name: str


class FileRef(Strict):
    name: str
    mime_type: str | None = None
    role: str
    uri: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    generation: int | None = None


class InputRole(Strict):
    """A role of a multi-file submission (DESIGN §12) and the glob patterns of its member's name."""

    role: str = Field(pattern=f"^{SLUG_PATTERN}$")
    patterns: list[str] = Field(default=[], max_length=20)


class AssertionSpec(Strict):
    """A CEL expression over a step's results (DESIGN §12); false is a finding coded with its id."""

    id: str = Field(pattern=f"^{SLUG_PATTERN}$")
    expr: str = Field(min_length=1, max_length=MAX_ASSERTION_CHARS)
    severity: Severity = Severity.ERROR
    # `{{ expr }}` placeholders are rendered with CEL over the same context; without a message the finding quotes
    # the expression.
    message: str | None = Field(default=None, max_length=MAX_ASSERTION_CHARS)


class InputContext(Strict):
    attempt_id: str
    callback_id: str
    expected_output_uri: str
    execution_bundle_uri: str
    timeout_seconds: int = Field(gt=0)


class InputEnvelope(Strict):
    schema_version: Literal["validibot.input.v1"] = INPUT_SCHEMA_VERSION
    run_id: str
    validator: ValidatorRef
    org: OrgRef
    workflow: WorkflowRef
    input_files: list[FileRef]
    resource_files: list[FileRef] = []
    inputs: dict[str, Any] = {}
    # The workflow's roles for a .zip submission, in the order declared (the first is the one validated); empty:
    # the submission is one file.
    input_roles: list[InputRole] = []
    # Checked by the runtime after the validator, wherever it runs (DESIGN §12).
    assertions: list[AssertionSpec] = []
    # Earlier steps' results by step key (their metrics by name, and outputs), for assertions' `steps.<key>`.
    prior_steps: dict[str, dict[str, Any]] = {}
    context: InputContext

    def to_bytes(self) -> bytes:
        """The canonical serialization: the bytes written to input.json and hashed into the attempt. Keys are
        sorted, because a step's config read back from Firestore need not keep the order it was written in, and a
        replayed intake must write the very bytes it scheduled."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False).encode()


class Location(Strict):
    file_role: str | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None


class Message(Strict):
    severity: Severity
    code: str
    text: str
    location: Location | None = None


class Counts(Strict):
    """Messages by severity: on a run and a step in Firestore, and in output.json over every message a validator
    reported, including those past the listing limit."""

    ERROR: int = Field(default=0, ge=0)
    WARNING: int = Field(default=0, ge=0)
    INFO: int = Field(default=0, ge=0)

    def plus(self, other: Counts) -> Counts:
        return Counts(ERROR=self.ERROR + other.ERROR, WARNING=self.WARNING + other.WARNING, INFO=self.INFO + other.INFO)

    def covers(self, other: Counts) -> bool:
        return self.ERROR >= other.ERROR and self.WARNING >= other.WARNING and self.INFO >= other.INFO

    @classmethod
    def of(cls, severities: list[Severity]) -> Counts:
        return cls(**{s.value: severities.count(s) for s in Severity})


class Metric(Strict):
    name: str
    value: float
    unit: str | None = None


class Artifact(Strict):
    name: str
    uri: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    mime_type: str | None = None
    # The version the validator wrote: what the web serves, and nothing written later under the same name.
    generation: int | None = None


class Timing(Strict):
    started_at: datetime
    finished_at: datetime


class OutputEnvelope(Strict):
    schema_version: Literal["validibot.output.v1"] = OUTPUT_SCHEMA_VERSION
    run_id: str
    step_key: str
    attempt_id: str
    callback_id: str
    input_envelope_sha256: str
    validator: ValidatorRef
    status: EnvelopeStatus
    timing: Timing
    messages: list[Message] = []
    # Over every message the validator reported; None means the listed messages are all of them.
    counts: Counts | None = None
    metrics: list[Metric] = []
    artifacts: list[Artifact] = []
    outputs: dict[str, Any] = {}

    def message_counts(self) -> Counts:
        return self.counts or Counts.of([m.severity for m in self.messages])

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
