from __future__ import annotations

import dataclasses
import gc
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from referencing.exceptions import Unresolvable

from jobs.validators.base import ConfigError, InputFile, OverBudget, ValidationContext, ValidationResult
from jobs.validators.json_schema import ASSERTED_FORMATS, MAX_INTEGER_DIGITS, JsonSchemaValidator, json_pointer
from schemas.enums import EnvelopeStatus, Severity
from schemas.envelopes import FileRef, Message


def context(
    tmp_path: Path, document: bytes, config: dict, resource_files: dict[str, bytes] | None = None
) -> ValidationContext:
    """`resource_files` by name, stored as the runtime stores them: each at its name as a relative path."""
    path = tmp_path / "doc.json"
    path.write_bytes(document)
    ref = FileRef(name="doc.json", role="primary", uri="gs://b/doc.json", size_bytes=len(document), sha256="0" * 64)
    stored = {}
    for name, data in (resource_files or {}).items():
        stored[name] = tmp_path / "resources" / name
        stored[name].parent.mkdir(parents=True, exist_ok=True)
        stored[name].write_bytes(data)
    return ValidationContext(
        files=[InputFile(ref, path)],
        inputs=config,
        workdir=tmp_path,
        timeout_seconds=60,
        deadline=time.monotonic() + 60,
        resources=stored,
    )


def validate(
    tmp_path: Path,
    document: object,
    schema: object,
    resource_files: dict[str, object] | None = None,
    **config: object,
) -> ValidationResult:
    """`resource_files` by name: bytes as they are, anything else as JSON."""
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    files = {
        name: data if isinstance(data, bytes) else json.dumps(data).encode()
        for name, data in (resource_files or {}).items()
    }
    return JsonSchemaValidator().validate(context(tmp_path, raw, {"schema": schema, **config}, files))


def located(messages: list[Message]) -> list[tuple[str, str, int | None, int | None, str | None]]:
    """What a finding says and where, without its wording."""
    return [(m.severity, m.code, m.location.line, m.location.column, m.location.path) for m in messages]


def codes(result: ValidationResult) -> list[tuple[str, str | None]]:
    return [(m.code, m.location.path) for m in result.messages]


BUDGET_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {"value": {"type": "integer"}}}}
AREA_SCHEMA = {"type": "object", "properties": {"floor_area_m2": {"type": "number", "exclusiveMinimum": 0}}}


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


def test_invalid_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        validate(tmp_path, {}, {"type": "no-such-type"})
    with pytest.raises(ConfigError, match="Extra inputs"):
        validate(tmp_path, {}, {}, surprise=True)


def test_json_pointer_escapes() -> None:
    assert json_pointer([]) == ""
    assert json_pointer(["a~b", "c/d", 0]) == "/a~0b/c~1d/0"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_where_they_are(tmp_path: Path, constant: str) -> None:
    # Python's json reads these, and NaN compares false with everything, so it passed exclusiveMinimum.
    result = validate(tmp_path, f'{{\n  "floor_area_m2": {constant}\n}}'.encode(), AREA_SCHEMA)

    assert located(result.messages) == [(Severity.ERROR, "json.non_finite_number", 2, 20, None)]
    assert result.messages[0].text.startswith(f"{constant} is not a JSON number")
    assert result.status == EnvelopeStatus.FAILED_VALIDATION


def test_every_refused_number_is_reported_and_the_document_is_not_validated(tmp_path: Path) -> None:
    document = (
        b'{"note": "NaN, -Infinity and 1e400 in a string are text",\n "a": [1, -Infinity, 2.5],\n "b": 1e400, "c": NaN}'
    )

    result = validate(tmp_path, document, {"required": ["missing"]})

    # No json-schema.required: a document that is not JSON is not validated.
    assert located(result.messages) == [
        (Severity.ERROR, "json.non_finite_number", 2, 11, None),
        (Severity.ERROR, "json.number_out_of_range", 3, 7, None),
        (Severity.ERROR, "json.non_finite_number", 3, 19, None),
    ]
    assert result.messages[1].text.startswith("1e400 is beyond the range of a double-precision number")
    assert result.status == EnvelopeStatus.FAILED_VALIDATION


@pytest.fixture(params=[None, 0, 1000], ids=["interpreter-default", "interpreter-unlimited", "interpreter-lower"])
def interpreter_digit_limit(request: pytest.FixtureRequest) -> Iterator[int]:
    """The limit in force with the interpreter's own int() limit as Python sets it, switched off, or set lower."""
    saved = sys.get_int_max_str_digits()
    if request.param is not None:
        sys.set_int_max_str_digits(request.param)
    try:
        yield min(MAX_INTEGER_DIGITS, sys.get_int_max_str_digits() or MAX_INTEGER_DIGITS)
    finally:
        sys.set_int_max_str_digits(saved)


def test_an_integer_too_long_to_read_is_a_located_finding(tmp_path: Path, interpreter_digit_limit: int) -> None:
    digits = 5000
    result = validate(tmp_path, f'{{"ok": 1,\n "floor_area_m2": -{"9" * digits}}}'.encode(), AREA_SCHEMA)

    assert located(result.messages) == [(Severity.ERROR, "json.number_too_long", 2, 19, None)]
    assert result.messages[0].text.startswith(
        f"an integer of {digits} digits is longer than the {interpreter_digit_limit} allowed"
    )
    assert result.status == EnvelopeStatus.FAILED_VALIDATION


def test_an_integer_as_long_as_allowed_is_validated(tmp_path: Path) -> None:
    longest = int("9" * MAX_INTEGER_DIGITS)
    assert validate(tmp_path, {"floor_area_m2": longest}, AREA_SCHEMA).messages == []
    result = validate(tmp_path, {"floor_area_m2": -longest}, AREA_SCHEMA)
    assert [(m.code, m.location.path) for m in result.messages] == [("json-schema.exclusiveMinimum", "/floor_area_m2")]


def test_multiple_of_is_exact_for_integers_beyond_a_float(tmp_path: Path) -> None:
    # jsonschema divides the integer by the float before guarding against overflow, and raised OverflowError.
    result = validate(tmp_path, [10**400, 10**400 + 1, 3], {"items": {"multipleOf": 2.0}})
    assert [(m.code, m.location.path) for m in result.messages] == [
        ("json-schema.multipleOf", "/1"),
        ("json-schema.multipleOf", "/2"),
    ]
    assert validate(tmp_path, [10**400, 1.5], {"items": {"multipleOf": 0.5}}).messages == []


def test_each_repeated_key_is_a_warning_at_its_path_and_the_last_value_is_validated(tmp_path: Path) -> None:
    document = b"""{
      "rooms": [{"name": "a"}, {"name": "b", "area": 3, "name": 7}],
      "meta": {"x": 1, "x": 2, "x": 3, "y": [{"z/~": 1, "z/~": 2}]},
      "old": {"lost": 1, "lost": 2},
      "old": {"kept": true}
    }"""
    schema = {"properties": {"rooms": {"items": {"properties": {"name": {"type": "string"}}}}}}

    result = validate(tmp_path, document, schema)

    assert [(m.severity, m.code, m.location.path) for m in result.messages] == [
        (Severity.WARNING, "json.duplicate_key", "/rooms/1/name"),
        (Severity.WARNING, "json.duplicate_key", "/meta/x"),
        (Severity.WARNING, "json.duplicate_key", "/meta/y/0/z~1~0"),
        (Severity.WARNING, "json.duplicate_key", "/old"),
        # Inside the value the second "old" replaced: still in the document a reader sees.
        (Severity.WARNING, "json.duplicate_key", "/old/lost"),
        (Severity.ERROR, "json-schema.type", "/rooms/1/name"),
    ]
    assert result.messages[1].text == "key 'x' appears 3 times in one object; the last value is used"
    assert result.messages[-1].text == "7 is not of type 'string'"
    assert result.metrics[0].value == 1


def test_repeated_keys_alone_do_not_fail_the_document(tmp_path: Path) -> None:
    result = validate(tmp_path, b'[{"a": 1, "a": 1}]', {"items": {"required": ["a"]}})

    assert located(result.messages) == [(Severity.WARNING, "json.duplicate_key", None, None, "/0/a")]
    assert result.status == EnvelopeStatus.SUCCESS


def test_a_valid_document_with_every_kind_of_value_has_no_findings(tmp_path: Path) -> None:
    document = {
        "floor_area_m2": 1.5e308,
        "tiny": -5e-324,
        "count": -(10**300),
        "text": 'NaN Infinity 1e400 "quoted" \\',
        "nested": [[], {}, [{"a": None, "b": True, "c": False}]],
    }
    result = validate(tmp_path, document, AREA_SCHEMA | {"required": ["floor_area_m2", "nested"]})
    assert result.messages == []
    assert result.status == EnvelopeStatus.SUCCESS


def test_every_violation_is_reported_in_document_order(tmp_path: Path) -> None:
    # More than the runtime lists by default: what is kept is the runtime's choice, not the validator's.
    count = 12_000
    result = validate(tmp_path, [{"room": -1}] * count, {"items": {"properties": {"room": {"minimum": 0}}}})

    assert len(result.messages) == count
    assert gc.isenabled()  # the collector, held off while messages are built, runs again
    assert result.metrics[0].value == count
    assert [m.location.path for m in result.messages[8:12]] == ["/8/room", "/9/room", "/10/room", "/11/room"]
    assert result.messages[-1].location.path == f"/{count - 1}/room"


def test_a_document_too_deep_for_the_schema_is_a_finding(tmp_path: Path) -> None:
    depth = 600  # read by json, but past what jsonschema's recursion through $ref can follow
    result = validate(tmp_path, b"[" * depth + b"]" * depth, {"items": {"$ref": "#"}, "minItems": 1})
    assert located(result.messages) == [(Severity.ERROR, "json.depth", None, None, None)]


def test_a_validation_past_its_inline_budget_stops_while_descending(tmp_path: Path) -> None:
    """Even a valid document, which gives the validator no violation to pause at, is interruptible."""

    @dataclasses.dataclass(frozen=True)
    class SpentAfterParsing(ValidationContext):
        checks: list[int] = dataclasses.field(default_factory=list)

        def check_budget(self) -> None:
            self.checks.append(1)
            if len(self.checks) > 10:
                raise OverBudget("still validating when the inline time budget ran out")

    document = json.dumps([{"value": n} for n in range(1000)]).encode()
    plain = context(tmp_path, document, {"schema": BUDGET_SCHEMA})
    spent = SpentAfterParsing(**{f.name: getattr(plain, f.name) for f in dataclasses.fields(ValidationContext)})

    with pytest.raises(OverBudget):
        JsonSchemaValidator().validate(spent)

    assert len(spent.checks) == 11
    assert JsonSchemaValidator().validate(plain).status == EnvelopeStatus.SUCCESS


# A workflow's resource files, by their paths relative to the workflow file.
BUILDING_RESOURCES: dict[str, object] = {
    "schemas/building.json": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"address": {"$ref": "address.json"}, "zone": {"$ref": "defs/zones.json#/$defs/zone"}},
    },
    "schemas/address.json": {"type": "object", "required": ["street"]},
    "schemas/defs/zones.json": {"$defs": {"zone": {"enum": ["3A", "5B"]}}},
    "units.json": {"$id": "https://example.com/units", "$defs": {"area": {"minimum": 0}}},
    "notes.txt": b"Not JSON: a resource for something else, which no reference can use.",
}


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every name lookup or connection attempted, each refused."""
    attempts: list[object] = []

    def refuse(*args: object) -> None:
        attempts.append(args)
        raise OSError("no network in unit tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    return attempts


def test_a_schema_in_a_resource_file_resolves_relative_refs_against_its_siblings(tmp_path: Path) -> None:
    config = {"resources": ["schemas/**/*.json"]}
    valid = {"address": {"street": "Main St"}, "zone": "5B"}
    assert validate(tmp_path, valid, "schemas/building.json", BUILDING_RESOURCES, **config).messages == []

    result = validate(tmp_path, {"address": {}, "zone": "9Z"}, "schemas/building.json", BUILDING_RESOURCES, **config)

    assert codes(result) == [("json-schema.required", "/address"), ("json-schema.enum", "/zone")]


def test_an_inline_schema_refers_to_resources_by_name_or_by_their_id(tmp_path: Path) -> None:
    # The inline schema lives in the workflow file, so a resource's name is a reference to it.
    schema = {
        "properties": {
            "address": {"$ref": "schemas/address.json"},
            "area": {"$ref": "https://example.com/units#/$defs/area"},
        }
    }
    result = validate(tmp_path, {"address": {}, "area": -1}, schema, BUILDING_RESOURCES)
    assert codes(result) == [("json-schema.required", "/address"), ("json-schema.minimum", "/area")]


def test_resources_are_found_by_name_under_the_configured_base_uri(tmp_path: Path) -> None:
    schema = {"$ref": "http://localhost:1234/schemas/address.json"}
    result = validate(tmp_path, {}, schema, BUILDING_RESOURCES, resources_base_uri="http://localhost:1234/")
    assert codes(result) == [("json-schema.required", "")]


@pytest.mark.parametrize(
    "base_uri",
    # urljoin resolves nothing against a urn:, a base that is not a folder would lose its last segment, and the
    # rest are not absolute or not plain.
    ["urn:validibot:resource:/", "https://example.com/schemas", "schemas/", "https://example.com/?v=1/", "/abs/"],
)
def test_the_base_uri_must_be_a_folder_that_references_resolve_against(tmp_path: Path, base_uri: str) -> None:
    with pytest.raises(ConfigError, match="resources_base_uri must be an absolute hierarchical URI ending in '/'"):
        validate(tmp_path, {}, {}, resources_base_uri=base_uri)


def test_a_ref_no_resource_answers_is_an_error_finding_and_nothing_is_fetched(
    tmp_path: Path, network_attempts: list[object]
) -> None:
    url = "http://schemas.example.com/address.json"
    schema = {"properties": {"name": {"type": "string"}, "address": {"$ref": url}}}

    result = validate(tmp_path, {"name": 1, "address": {}}, schema, BUILDING_RESOURCES)

    # What validation found before the reference is still reported.
    assert located(result.messages) == [
        (Severity.ERROR, "json-schema.type", None, None, "/name"),
        (Severity.ERROR, "json-schema.unresolvable_ref", None, None, None),
    ]
    assert f"$ref {url!r} names no schema among the step's resource files" in result.messages[1].text
    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    assert network_attempts == []
    # The trap works: jsonschema left to its default registry does try to fetch it.
    with pytest.raises(Unresolvable):
        jsonschema.Draft202012Validator({"$ref": url}).validate({})
    assert network_attempts


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("schemas/defs/zones.json#/$defs/climate", "a $ref's JSON Pointer '/$defs/climate' points to nothing"),
        ("schemas/address.json#street", "a $ref names the anchor 'street', which "),
        ("#/$defs/missing", "a $ref's JSON Pointer '/$defs/missing' points to nothing"),
    ],
)
def test_a_pointer_or_anchor_that_leads_nowhere_is_an_error_finding(tmp_path: Path, ref: str, reason: str) -> None:
    [message] = validate(tmp_path, {}, {"$ref": ref}, BUILDING_RESOURCES).messages
    assert (message.severity, message.code) == (Severity.ERROR, "json-schema.unresolvable_ref")
    assert message.text.startswith(reason)


def test_a_resource_that_is_not_a_valid_schema_is_left_out_and_a_ref_to_it_says_why(tmp_path: Path) -> None:
    # Crawled, it crashed referencing: an $id that is not a string, subschemas that are not schemas.
    resources = {**BUILDING_RESOURCES, "sample.json": {"$id": 5, "items": 5, "properties": [1]}}
    assert codes(validate(tmp_path, {}, "schemas/address.json", resources)) == [("json-schema.required", "")]

    [message] = validate(tmp_path, {}, {"$ref": "sample.json"}, resources).messages

    assert message.code == "json-schema.unresolvable_ref"
    assert message.text.startswith(
        "$ref 'sample.json' names the resource file 'sample.json', but the schema is not a valid JSON Schema: "
    )


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (True, []),
        (False, [("json-schema.false_schema", "")]),
        ({"properties": {"a": False, "b": True}}, [("json-schema.false_schema", "/a")]),
        ("never.json", [("json-schema.false_schema", "")]),
    ],
)
def test_boolean_schemas(tmp_path: Path, schema: object, expected: list[tuple[str, str]]) -> None:
    result = validate(tmp_path, {"a": 1, "b": 2}, schema, {"never.json": False})
    assert codes(result) == expected
    assert all(m.text.startswith("False schema does not allow ") for m in result.messages)


@pytest.mark.parametrize("schema", [1, "", None, ["type"]])
def test_a_schema_is_an_object_a_boolean_or_a_resource_name(tmp_path: Path, schema: object) -> None:
    with pytest.raises(ConfigError, match="invalid configuration"):
        validate(tmp_path, {}, schema)


@pytest.mark.parametrize(
    ("resources", "reason"),
    [
        ({}, "the schema 'main.json' is not one of the step's resource files"),
        ({"main.json": b"{"}, "the schema 'main.json' is not JSON"),
        ({"main.json": [{"type": "object"}]}, "the schema 'main.json' is not a JSON Schema"),
        ({"main.json": {"type": "no-such-type"}}, "the schema 'main.json': the schema is not a valid JSON Schema"),
    ],
)
def test_a_schema_resource_that_is_missing_or_not_a_schema_is_refused(
    tmp_path: Path, resources: dict[str, object], reason: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        validate(tmp_path, {}, "main.json", resources)


def test_a_referenced_resource_is_validated_by_its_own_draft_and_hardened(tmp_path: Path) -> None:
    resources = {
        "even.json": {"$schema": "https://json-schema.org/draft/2020-12/schema", "items": {"multipleOf": 2.0}},
        # Draft-07's items as an array is 2020-12's prefixItems.
        "pair.json": {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]},
    }
    schema = {"properties": {"even": {"$ref": "even.json"}, "pair": {"$ref": "pair.json"}}}

    # Without the hardening kept below a resource that names its draft, multipleOf raised OverflowError.
    result = validate(tmp_path, {"even": [10**400 + 1], "pair": [1, 2]}, schema, resources)

    assert codes(result) == [("json-schema.multipleOf", "/even/0"), ("json-schema.type", "/pair/0")]


FORMAT_SCHEMA = {
    "properties": {"email": {"format": "email"}, "born": {"format": "date"}, "seen": {"format": "date-time"}}
}


def test_formats_are_annotations_unless_asserted(tmp_path: Path) -> None:
    document = {"email": "nobody", "born": "2024-02-30", "seen": "yesterday"}
    assert validate(tmp_path, document, FORMAT_SCHEMA).messages == []

    result = validate(tmp_path, document, FORMAT_SCHEMA, format_assertion=True)

    # date-time is not among the formats asserted: its check needs a package that is not installed.
    assert codes(result) == [("json-schema.format", "/born"), ("json-schema.format", "/email")]
    assert result.messages[0].text == "'2024-02-30' is not a 'date'"
    valid = {"email": "someone@example.com", "born": "2024-02-29", "seen": "yesterday"}
    assert validate(tmp_path, valid, FORMAT_SCHEMA, format_assertion=True).messages == []


def test_every_asserted_format_is_checked_by_each_draft_that_defines_it() -> None:
    assert ASSERTED_FORMATS.issubset(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)
    # uuid is not a draft-07 format.
    assert (ASSERTED_FORMATS - {"uuid"}).issubset(jsonschema.Draft7Validator.FORMAT_CHECKER.checkers)
