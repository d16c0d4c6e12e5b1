"""JSON Schema validation (draft 2020-12 and draft-07). One ERROR finding per violation, located by JSON Pointer."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import jsonschema
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, model_validator
from referencing.exceptions import Unresolvable

from jobs.validators.base import ValidationContext, ValidationResult, parse_config
from schemas.enums import Severity
from schemas.envelopes import Location, Message, Metric

MAX_MESSAGE_CHARS = 500

_DRAFTS: dict[str, type[jsonschema.protocols.Validator]] = {
    "2020-12": jsonschema.Draft202012Validator,
    "draft-07": jsonschema.Draft7Validator,
}


class JsonSchemaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    json_schema: dict[str, Any] = Field(alias="schema")
    draft: Literal["2020-12", "draft-07"] | None = None

    @model_validator(mode="after")
    def _schema_is_valid(self) -> JsonSchemaConfig:
        try:
            self.validator_class().check_schema(self.json_schema)
        except SchemaError as exc:
            raise ValueError(f"the schema is not a valid JSON Schema: {exc.message}") from exc
        return self

    def validator_class(self) -> type[jsonschema.protocols.Validator]:
        if self.draft is not None:
            return _DRAFTS[self.draft]
        return jsonschema.validators.validator_for(self.json_schema, default=jsonschema.Draft202012Validator)


def json_pointer(path: Iterable[str | int]) -> str:
    """RFC 6901: '' is the document itself; '~' and '/' in keys are escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


class JsonSchemaValidator:
    id: ClassVar[str] = "json-schema"
    type: ClassVar[str] = "json-schema"
    version: ClassVar[str] = "1"
    mode: ClassVar[Literal["inline", "job"]] = "inline"
    config_model: ClassVar[type[BaseModel]] = JsonSchemaConfig

    def validate(self, context: ValidationContext) -> ValidationResult:
        config = parse_config(self, context.inputs)
        assert isinstance(config, JsonSchemaConfig)
        primary = context.primary()
        role = primary.ref.role
        try:
            document = json.loads(primary.path.read_bytes())
        except json.JSONDecodeError as exc:
            return ValidationResult(
                messages=[
                    Message(
                        severity=Severity.ERROR,
                        code="json.syntax",
                        text=f"{primary.ref.name} is not valid JSON: {exc.msg}",
                        location=Location(file_role=role, line=exc.lineno, column=exc.colno),
                    )
                ]
            )
        except UnicodeDecodeError as exc:
            return ValidationResult(
                messages=[
                    Message(
                        severity=Severity.ERROR,
                        code="json.encoding",
                        text=f"{primary.ref.name} is not UTF-8 text (byte {exc.start})",
                        location=Location(file_role=role),
                    )
                ]
            )
        except RecursionError:
            return ValidationResult(
                messages=[
                    Message(
                        severity=Severity.ERROR,
                        code="json.depth",
                        text=f"{primary.ref.name} nests too deeply to validate",
                        location=Location(file_role=role),
                    )
                ]
            )

        validator = config.validator_class()(config.json_schema)
        try:
            errors = sorted(validator.iter_errors(document), key=lambda e: (json_pointer(e.absolute_path), e.validator))
        except Unresolvable as exc:
            # References are resolved inside the schema only; validators never reach the network.
            return ValidationResult(runtime_error=f"the schema has a $ref that cannot be resolved: {exc}")
        messages = [
            Message(
                severity=Severity.ERROR,
                code=f"json-schema.{error.validator}",
                text=_clip(error.message),
                location=Location(file_role=role, path=json_pointer(error.absolute_path)),
            )
            for error in errors
        ]
        return ValidationResult(
            messages=messages,
            metrics=[Metric(name="schema_violations", value=len(messages), unit="count")],
        )
