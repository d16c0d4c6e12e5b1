from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from frictionless import FrictionlessException, Schema, system
from pydantic import ValidationError

from jobs.registry import get_validator
from jobs.validators.base import ConfigError, InputFile, OverBudget, ValidationContext, ValidationResult
from jobs.validators.tabular import LIMIT_CODE, MAX_FINDINGS, TabularConfig, TabularValidator, _sealed
from schemas.enums import EnvelopeStatus, Severity
from schemas.envelopes import FileRef
from tests.support import CORPORA

# Frictionless' own fixtures, with the results its specs assert (SOURCES.md quotes them).
FIXTURES = CORPORA / "csv" / "frictionless" / "data"

METERS_SCHEMA = {
    "fields": [
        {"name": "meter_id", "type": "string", "constraints": {"required": True, "pattern": "M-[0-9]{3}"}},
        {"name": "kind", "type": "string", "constraints": {"enum": ["electricity", "gas"]}},
        {"name": "kwh", "type": "number", "constraints": {"minimum": 0, "maximum": 10000}},
        {"name": "note", "type": "string", "constraints": {"minLength": 2, "maxLength": 5}},
        {"name": "read_on", "type": "date"},
    ],
    "primaryKey": ["meter_id"],
    "missingValues": ["", "NA"],
}


def context(
    tmp_path: Path,
    name: str,
    data: bytes,
    config: dict,
    resources: dict[str, Path] | None = None,
    *,
    seconds: float = 60,
    budget_seconds: float | None = None,
) -> ValidationContext:
    path = tmp_path / name
    path.write_bytes(data)
    ref = FileRef(name=name, role="primary", uri=f"gs://b/{name}", size_bytes=len(data), sha256="0" * 64)
    now = time.monotonic()
    return ValidationContext(
        files=[InputFile(ref, path)],
        inputs=config,
        workdir=tmp_path,
        timeout_seconds=60,
        deadline=now + seconds,
        budget_deadline=None if budget_seconds is None else now + budget_seconds,
        resources=resources or {},
    )


def validate(
    tmp_path: Path, name: str, data: bytes, config: dict, resources: dict[str, Path] | None = None
) -> ValidationResult:
    return TabularValidator().validate(context(tmp_path, name, data, config, resources))


def fixture(tmp_path: Path, name: str, config: dict, resources: dict[str, Path] | None = None) -> ValidationResult:
    """A corpus file validated in place (the context's copy is the submission, as the runtime downloads it)."""
    return validate(tmp_path, name, (FIXTURES / name).read_bytes(), config, resources)


def located(result: ValidationResult) -> list[tuple[int | None, int | None, str]]:
    """Frictionless' (rowNumber, fieldNumber, type) for each finding, as its specs flatten a report."""
    return [(m.location.line, m.location.column, m.code.removeprefix("tabular.")) for m in result.messages]


def metrics(result: ValidationResult) -> dict[str, float]:
    return {m.name: m.value for m in result.metrics}


# -- Frictionless' fixtures ------------------------------------------------------------------------------------


def test_table_and_its_schema_are_valid(tmp_path: Path) -> None:
    result = fixture(tmp_path, "table.csv", {"schema": "schema.json"}, {"schema.json": FIXTURES / "schema.json"})
    assert result.status == EnvelopeStatus.SUCCESS
    assert result.messages == []
    assert metrics(result) == {"rows": 2, "columns": 2, "errors": 0}


def test_a_label_the_schema_does_not_name_is_an_extra_label(tmp_path: Path) -> None:
    # SOURCES.md quotes two extra-cell errors as well, from the spec at the corpus' commit; the installed Frictionless
    # (5.21) no longer reports cells under an extra label, and its own spec
    # (resource/__spec__/test_validate_schema.py::test_resource_validate_schema_extra_headers_and_cells) asserts the
    # extra label alone.
    result = fixture(tmp_path, "table.csv", {"schema": {"fields": [{"name": "id", "type": "integer"}]}})
    assert located(result) == [(1, 2, "extra-label")]
    assert result.messages[0].location.path is None
    assert '"name"' in result.messages[0].text


def test_structural_errors(tmp_path: Path) -> None:
    # The spec validates invalid.csv against the schema Frictionless infers from it; here it is, written out.
    inferred = {
        "fields": [
            {"name": "id", "type": "integer"},
            {"name": "name", "type": "string"},
            {"name": "field3", "type": "integer"},
            {"name": "name2", "type": "integer"},
        ]
    }
    result = fixture(tmp_path, "invalid.csv", {"schema": inferred})
    assert located(result) == [
        (1, 3, "blank-label"),
        (1, 4, "duplicate-label"),
        (2, 3, "missing-cell"),
        (2, 4, "missing-cell"),
        (3, 3, "missing-cell"),
        (3, 4, "missing-cell"),
        (4, None, "blank-row"),
        (5, 5, "extra-cell"),
    ]
    assert [m.location.path for m in result.messages] == [
        "field3",
        "name2",
        "field3",
        "name2",
        "field3",
        "name2",
        None,
        None,
    ]
    assert all(m.severity == Severity.ERROR and m.location.file_role == "primary" for m in result.messages)
    assert metrics(result) == {"rows": 4, "columns": 4, "errors": 8}


def test_capital_valid_against_its_inferred_schema(tmp_path: Path) -> None:
    inferred = {"fields": [{"name": "id", "type": "integer"}, {"name": "name", "type": "string"}]}
    result = fixture(tmp_path, "capital-valid.csv", {"schema": inferred})
    assert result.status == EnvelopeStatus.SUCCESS
    assert metrics(result)["errors"] == 0


def test_unique_field_and_primary_key(tmp_path: Path) -> None:
    resources = {"unique-field.json": FIXTURES / "unique-field.json"}
    result = fixture(tmp_path, "unique-field.csv", {"schema": "unique-field.json"}, resources)
    assert located(result) == [(10, 1, "unique-error"), (10, None, "primary-key")]
    assert [m.location.path for m in result.messages] == ["id", "id"]
    assert metrics(result) == {"rows": 9, "columns": 3, "errors": 2}


def test_type_and_constraint_errors(tmp_path: Path) -> None:
    resources = {"schema-valid.json": FIXTURES / "schema-valid.json"}
    result = fixture(tmp_path, "schema-errors.csv", {"schema": "schema-valid.json"}, resources)
    # The spec picks the row errors and stops at three; every error is reported here, those three first.
    row_errors = [found for found in located(result) if found[2] != "primary-key"]
    assert row_errors[:3] == [(4, 1, "type-error"), (4, 2, "constraint-error"), (4, 3, "constraint-error")]
    assert located(result) == [
        (4, 1, "type-error"),
        (4, 2, "constraint-error"),
        (4, 3, "constraint-error"),
        (4, None, "primary-key"),
        (5, 1, "constraint-error"),
        (5, 4, "extra-cell"),
        (5, 5, "extra-cell"),
        (5, 6, "extra-cell"),
        (5, None, "primary-key"),
    ]


def test_countries_is_invalid(tmp_path: Path) -> None:
    # The spec only asserts "invalid"; the schema is the one of the resource descriptor countries.yaml.
    schema = yaml.safe_load((FIXTURES / "countries.yaml").read_text())["schema"]
    result = fixture(tmp_path, "countries.csv", {"schema": schema, "dialect": {"commentChar": "#"}})
    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    assert (3, 2, "type-error") in located(result)
    assert (4, 5, "extra-cell") in located(result)
    assert (7, 3, "constraint-error") in located(result)


def test_a_yaml_schema_resource(tmp_path: Path) -> None:
    resources = {"tables/country.schema.yaml": FIXTURES / "country.schema.yaml"}
    result = fixture(tmp_path, "country-1.csv", {"schema": "tables/country.schema.yaml"}, resources)
    assert result.status == EnvelopeStatus.SUCCESS
    assert metrics(result) == {"rows": 5, "columns": 4, "errors": 0}


def test_an_invalid_schema_resource_is_a_config_error(tmp_path: Path) -> None:
    resources = {"schema-invalid.json": FIXTURES / "schema-invalid.json"}
    with pytest.raises(ConfigError, match=r'"required" should be set as "constraints.required"'):
        fixture(tmp_path, "table.csv", {"schema": "schema-invalid.json"}, resources)


def test_a_schema_whose_foreign_key_names_a_remote_package_is_refused(tmp_path: Path) -> None:
    resources = {"s.json": FIXTURES / "schema-invalid-multiple-errors.json"}
    with pytest.raises(ConfigError, match=r"datapackage 'http://data.okfn.org/data/mydatapackage/'"):
        fixture(tmp_path, "table.csv", {"schema": "s.json"}, resources)


# -- Types, constraints, keys, dialects --------------------------------------------------------------------------


def test_a_valid_table_passes_with_its_metrics(tmp_path: Path) -> None:
    data = b"meter_id,kind,kwh,note,read_on\nM-001,gas,12.5,ok,2026-01-31\nM-002,electricity,NA,fine,2026-02-28\n"
    result = validate(tmp_path, "meters.csv", data, {"schema": METERS_SCHEMA})
    assert result.status == EnvelopeStatus.SUCCESS
    assert result.messages == []
    assert metrics(result) == {"rows": 2, "columns": 5, "errors": 0}
    assert {m.unit for m in result.metrics} == {"count"}


def test_each_constraint_is_a_finding_on_its_row_and_field(tmp_path: Path) -> None:
    data = (
        b"meter_id,kind,kwh,note,read_on\n"
        b"M-001,steam,-1,x,2026-01-31\n"
        b"M-002,gas,20000,toolong,31/01/2026\n"
        b"M-001,gas,abc,ok,2026-01-31\n"
        b",gas,1,ok,2026-01-31\n"
        b"M-9,gas,1,ok,2026-01-31\n"
    )
    result = validate(tmp_path, "meters.csv", data, {"schema": METERS_SCHEMA})
    found = [(m.location.line, m.location.path, m.code) for m in result.messages]
    assert found == [
        (2, "kind", "tabular.constraint-error"),  # enum
        (2, "kwh", "tabular.constraint-error"),  # minimum
        (2, "note", "tabular.constraint-error"),  # minLength
        (3, "kwh", "tabular.constraint-error"),  # maximum
        (3, "note", "tabular.constraint-error"),  # maxLength
        (3, "read_on", "tabular.type-error"),  # date format
        (4, "kwh", "tabular.type-error"),
        (4, "meter_id", "tabular.primary-key"),
        (5, "meter_id", "tabular.constraint-error"),  # required
        (5, "meter_id", "tabular.primary-key"),
        (6, "meter_id", "tabular.constraint-error"),  # pattern
    ]
    assert "steam" in result.messages[0].text
    assert metrics(result)["errors"] == len(found)


def test_a_self_referencing_foreign_key(tmp_path: Path) -> None:
    schema = {
        "fields": [{"name": "id", "type": "integer"}, {"name": "parent", "type": "integer"}],
        "foreignKeys": [{"fields": "parent", "reference": {"resource": "", "fields": "id"}}],
    }
    result = validate(tmp_path, "tree.csv", b"id,parent\n1,\n2,1\n3,9\n", {"schema": schema})
    assert [(m.location.line, m.location.path, m.code) for m in result.messages] == [
        (4, "parent", "tabular.foreign-key")
    ]


SIMPLE_SCHEMA = {"fields": [{"name": "a", "type": "integer"}, {"name": "b", "type": "string"}]}


def test_a_tsv_file_by_its_extension(tmp_path: Path) -> None:
    result = validate(tmp_path, "table.tsv", b"a\tb\n1\tx, y\nq\tz\n", {"schema": SIMPLE_SCHEMA})
    assert located(result) == [(3, 1, "type-error")]
    assert metrics(result) == {"rows": 2, "columns": 2, "errors": 1}


def test_a_tsv_file_by_the_configured_format(tmp_path: Path) -> None:
    data = b"a\tb\n1\tx,y,z\n"
    assert validate(tmp_path, "table.txt", data, {"schema": SIMPLE_SCHEMA, "format": "tsv"}).messages == []


def test_the_configured_dialect(tmp_path: Path) -> None:
    config = {"schema": SIMPLE_SCHEMA, "dialect": {"delimiter": ";", "header": False, "quoteChar": "'"}}
    result = validate(tmp_path, "table.csv", b"1;'x;y'\nq;z\n", config)
    assert located(result) == [(2, 1, "type-error")]
    assert metrics(result) == {"rows": 2, "columns": 2, "errors": 1}


def test_an_empty_file(tmp_path: Path) -> None:
    result = validate(tmp_path, "table.csv", b"", {"schema": SIMPLE_SCHEMA})
    assert [m.code for m in result.messages] == ["tabular.source-error"]
    assert result.status == EnvelopeStatus.FAILED_VALIDATION


def test_bytes_that_are_not_text(tmp_path: Path) -> None:
    result = validate(tmp_path, "table.csv", bytes(range(256)) * 8, {"schema": SIMPLE_SCHEMA})
    assert [m.code for m in result.messages] == ["tabular.encoding-error"]


# -- Limits ------------------------------------------------------------------------------------------------------


def test_findings_past_the_cap_are_counted_and_summarised(tmp_path: Path) -> None:
    rows = MAX_FINDINGS + 500
    data = b"a,b\n" + b"x,y\n" * rows
    result = validate(tmp_path, "table.csv", data, {"schema": SIMPLE_SCHEMA})
    assert len(result.messages) == MAX_FINDINGS + 1
    assert {m.code for m in result.messages[:-1]} == {"tabular.type-error"}
    summary = result.messages[-1]
    assert (summary.severity, summary.code) == (Severity.INFO, LIMIT_CODE)
    assert str(rows) in summary.text
    assert metrics(result) == {"rows": rows, "columns": 2, "errors": rows}


def test_a_hundred_thousand_rows(tmp_path: Path) -> None:
    schema = {
        "fields": [
            {"name": "id", "type": "integer", "constraints": {"required": True}},
            {"name": "meter", "type": "string", "constraints": {"pattern": "meter-[0-9]+"}},
            {"name": "kwh", "type": "number", "constraints": {"minimum": 0}},
            {"name": "day", "type": "date"},
        ]
    }
    lines = (f"{i},meter-{i % 997},{i * 0.5:.1f},2026-01-{1 + i % 28:02d}\n" for i in range(1, 100_001))
    data = ("id,meter,kwh,day\n" + "".join(lines)).encode()
    result = validate(tmp_path, "big.csv", data, {"schema": schema})
    assert result.messages == []
    assert metrics(result) == {"rows": 100_000, "columns": 4, "errors": 0}


def test_past_the_inline_budget_the_step_is_handed_over(tmp_path: Path) -> None:
    data = b"a,b\n" + b"1,x\n" * 2000
    with pytest.raises(OverBudget):
        TabularValidator().validate(context(tmp_path, "t.csv", data, {"schema": SIMPLE_SCHEMA}, budget_seconds=-1))


def test_past_the_step_timeout_what_was_found_is_kept(tmp_path: Path) -> None:
    data = b"a,b\nq,x\n" + b"1,x\n" * 2000
    # seconds_left() keeps a reporting margin back: a deadline five seconds away is already spent.
    result = TabularValidator().validate(context(tmp_path, "t.csv", data, {"schema": SIMPLE_SCHEMA}, seconds=5))
    assert result.timed_out
    assert result.status == EnvelopeStatus.FAILED_RUNTIME
    assert "timeout" in (result.runtime_error or "")
    assert located(result) == [(2, 1, "type-error")]
    assert metrics(result)["rows"] == 1000


# -- Nothing but the submission and the resources ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({**SIMPLE_SCHEMA, "$schema": "https://example.com/my-profile.json"}, "/$schema"),
        ({**SIMPLE_SCHEMA, "profile": "file:///etc/passwd"}, "/profile"),
        ({**SIMPLE_SCHEMA, "path": "../secrets.csv"}, "/path"),
        (
            {"fields": [{"name": "a", "type": "integer", "path": "https://example.com/a.csv"}]},
            "/fields/0/path",
        ),
        (
            {
                **SIMPLE_SCHEMA,
                "foreignKeys": [{"fields": "a", "reference": {"resource": "https://example.com/t.csv", "fields": "a"}}],
            },
            "/foreignKeys/0/reference/resource",
        ),
        (
            {**SIMPLE_SCHEMA, "foreignKeys": [{"fields": "a", "reference": {"resource": "other", "fields": "a"}}]},
            "/foreignKeys/0/reference/resource",
        ),
        (
            {
                "fields": [
                    {
                        "name": "a",
                        "type": "object",
                        "constraints": {"jsonSchema": {"$ref": "https://example.com/object.json"}},
                    }
                ]
            },
            "/fields/0/constraints/jsonSchema/$ref",
        ),
    ],
)
def test_a_schema_naming_anything_outside_itself_is_refused(tmp_path: Path, schema: dict, named: str) -> None:
    with pytest.raises(ValidationError, match="nothing is fetched") as refused:
        TabularConfig.model_validate({"schema": schema})
    assert named in str(refused.value)
    (tmp_path / "s.json").write_text(json.dumps(schema))
    with pytest.raises(ConfigError, match="nothing is fetched"):
        validate(tmp_path, "t.csv", b"a,b\n1,x\n", {"schema": "s.json"}, {"s.json": tmp_path / "s.json"})


def test_standard_profiles_and_urls_that_only_describe_are_accepted(tmp_path: Path) -> None:
    schema = {
        "$schema": "https://datapackage.org/profiles/2.0/tableschema.json",
        "fields": [
            {
                "name": "a",
                "type": "integer",
                "rdfType": "https://schema.org/Integer",
                "description": "See https://example.com/docs",
            }
        ],
    }
    result = validate(tmp_path, "t.csv", b"a\n1\nx\n", {"schema": schema})
    assert located(result) == [(3, 1, "type-error")]


def test_frictionless_is_offline_while_it_validates_and_restored_after() -> None:
    before = (system.trusted, system.onerror, system.http_session)
    with _sealed():
        with pytest.raises(FrictionlessException, match="fetches nothing"):
            Schema.from_descriptor("https://example.com/schema.json")
        with _sealed():
            assert system.trusted is False
        assert system.http_session is not before[2]
    assert (system.trusted, system.onerror, system.http_session) == before


# -- Configuration -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"schema": SIMPLE_SCHEMA, "encoding": "utf-8"},
        {"schema": SIMPLE_SCHEMA, "format": "xlsx"},
        {"schema": SIMPLE_SCHEMA, "dialect": {"delimiter": ";;"}},
        {"schema": SIMPLE_SCHEMA, "dialect": {"quote_char": "'"}},
        {"schema": SIMPLE_SCHEMA, "dialect": {"controls": [{"type": "remote"}]}},
        {"schema": {"fields": []}},
        {"schema": {"fields": [{"name": "a", "type": "unicorn"}]}},
        {"schema": ["not", "an", "object"]},
        {"schema": ""},
    ],
)
def test_configs_that_are_refused(config: dict) -> None:
    with pytest.raises(ValidationError):
        TabularConfig.model_validate(config)


def test_a_schema_that_is_not_among_the_resources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not one of the step's resource files"):
        validate(tmp_path, "t.csv", b"a,b\n1,x\n", {"schema": "missing.json"})


def test_a_schema_resource_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        validate(tmp_path, "t.csv", b"a,b\n1,x\n", {"schema": "s.json"}, {"s.json": tmp_path / "s.json"})


def test_registered_as_an_inline_validator() -> None:
    validator = get_validator("tabular")
    assert isinstance(validator, TabularValidator)
    assert validator.mode == "inline"
