from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jobs.runtime import build_output
from jobs.validators.base import ConfigError, InputFile, ValidationContext, ValidationResult
from jobs.validators.json_schema import JsonSchemaValidator, json_pointer
from schemas.enums import EnvelopeStatus
from schemas.envelopes import FileRef, Message


def context(tmp_path: Path, document: bytes, config: dict) -> ValidationContext:
    path = tmp_path / "doc.json"
    path.write_bytes(document)
    ref = FileRef(name="doc.json", role="primary", uri="gs://b/doc.json", size_bytes=len(document), sha256="0" * 64)
    return ValidationContext(
        files=[InputFile(ref, path)],
        inputs=config,
        workdir=tmp_path,
        timeout_seconds=60,
        deadline=time.monotonic() + 60,
    )


def validate(tmp_path: Path, document: object, schema: dict, **config: object) -> ValidationResult:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return JsonSchemaValidator().validate(context(tmp_path, raw, {"schema": schema, **config}))


def test_one_error_per_violation_located_by_json_pointer(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"a/b": {"type": "integer"}, "list": {"items": {"maximum": 3}}},
        "required": ["must"],
    }
    result = validate(tmp_path, {"a/b": "x", "list": [1, 9, 2, 10]}, schema)

    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    assert [(m.location.path, m.code) for m in result.messages] == [
        ("", "json-schema.required"),
        ("/a~1b", "json-schema.type"),
        ("/list/1", "json-schema.maximum"),
        ("/list/3", "json-schema.maximum"),
    ]
    assert all(m.severity == "ERROR" for m in result.messages)
    assert result.metrics[0].value == 4


def test_valid_document_succeeds(tmp_path: Path) -> None:
    result = validate(tmp_path, {"name": "x"}, {"type": "object", "required": ["name"]})
    assert result.status == EnvelopeStatus.SUCCESS
    assert result.messages == []


def test_draft_is_honoured(tmp_path: Path) -> None:
    # prefixItems exists in 2020-12 only; draft-07 ignores it.
    schema = {"prefixItems": [{"type": "string"}]}
    assert validate(tmp_path, [1], schema, draft="2020-12").status == EnvelopeStatus.FAILED_VALIDATION
    assert validate(tmp_path, [1], schema, draft="draft-07").status == EnvelopeStatus.SUCCESS
    detected = {"$schema": "http://json-schema.org/draft-07/schema#", **schema}
    assert validate(tmp_path, [1], detected).status == EnvelopeStatus.SUCCESS


def test_malformed_json_is_a_located_finding(tmp_path: Path) -> None:
    result = validate(tmp_path, b'{\n  "a": ,\n}', {})
    [message] = result.messages
    assert message.code == "json.syntax"
    assert (message.location.line, message.location.column) == (2, 8)
    assert result.status == EnvelopeStatus.FAILED_VALIDATION


def test_non_utf8_and_deeply_nested_documents_are_findings(tmp_path: Path) -> None:
    assert validate(tmp_path, b"\xff\xfe{", {}).messages[0].code in {"json.encoding", "json.syntax"}
    assert validate(tmp_path, b"[" * 100_000 + b"]" * 100_000, {}).messages[0].code == "json.depth"


def test_remote_refs_are_never_fetched(tmp_path: Path) -> None:
    result = validate(tmp_path, {"a": 1}, {"$ref": "https://example.invalid/schema.json"})
    assert result.status == EnvelopeStatus.FAILED_RUNTIME
    assert "cannot be resolved" in result.runtime_error


def test_invalid_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        validate(tmp_path, {}, {"type": "no-such-type"})
    with pytest.raises(ConfigError, match="Extra inputs"):
        validate(tmp_path, {}, {}, surprise=True)


def test_json_pointer_escapes() -> None:
    assert json_pointer([]) == ""
    assert json_pointer(["a~b", "c/d", 0]) == "/a~0b/c~1d/0"


def test_output_keeps_at_most_the_configured_number_of_messages() -> None:
    from datetime import UTC, datetime

    from schemas.envelopes import InputContext, InputEnvelope, OrgRef, ValidatorRef, WorkflowRef

    envelope = InputEnvelope(
        run_id="r",
        validator=ValidatorRef(id="json-schema", type="json-schema", version="1"),
        org=OrgRef(id="demo", name="Demo"),
        workflow=WorkflowRef(id="demo.wf", step_key="s", step_name="S"),
        input_files=[],
        context=InputContext(
            attempt_id="01-1",
            callback_id="cb",
            expected_output_uri="gs://b/o",
            execution_bundle_uri="gs://b/",
            timeout_seconds=5,
        ),
    )
    many = ValidationResult(messages=[Message(severity="ERROR", code="x", text=str(i)) for i in range(10)])
    now = datetime.now(UTC)

    output = build_output(envelope, "f" * 64, many, now, now, max_messages=4)

    assert [m.text for m in output.messages[:3]] == ["0", "1", "2"]
    assert output.messages[3].code == "truncated"
    assert output.messages[3].text.startswith("7 more messages were dropped")
    assert output.status == EnvelopeStatus.FAILED_VALIDATION
