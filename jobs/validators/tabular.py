"""Tabular validation: CSV and TSV against a Frictionless Table Schema and CSV dialect.

Frictionless checks the table row by row (labels, structure, types and formats, constraints, unique fields, the primary
key, self-referencing foreign keys, missing values): each error it reports is an ERROR finding coded `tabular.` plus
its error type (`tabular.type-error`, `tabular.missing-cell`, ...), located by row number (`line`), field name (`path`)
and field position (`column`). The first MAX_FINDINGS are listed, then one INFO finding gives the total; the `errors`
metric counts every one. Rows are streamed, so memory does not grow with the file, except for what a unique field, the
primary key or a foreign key needs: Frictionless remembers the values it has seen.

Frictionless reads the submission and nothing else. It is handed the file as an open stream, never a path, with the
schema and dialect as objects the validator built itself; a schema that names another document (a URL, a path, a
data package, another resource of a foreign key, a `$ref` out of itself) is refused before Frictionless sees it; and
while it runs, Frictionless is untrusted and its HTTP session refuses every request, whatever slipped past.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NoReturn

import yaml
from frictionless import Checklist, Dialect, Error, FrictionlessException, Schema, errors, system
from frictionless.resources import TableResource
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from jobs.validators.base import ConfigError, ValidationContext, ValidationResult, parse_config
from schemas.enums import Severity
from schemas.envelopes import Location, Message, Metric

CODE_PREFIX = "tabular."
# Findings listed before the rest are only counted: a broken column in a large file is otherwise a finding per row.
MAX_FINDINGS = 1000
MAX_MESSAGE_CHARS = 500
# How often the row loop looks at the clock: often enough to hand over on time, rarely enough to cost nothing.
CLOCK_EVERY_ROWS = 1000
LIMIT_CODE = CODE_PREFIX + "error-limit"

# A Table Schema's `$schema` may name the standard it follows; Frictionless reads the version from these and never
# fetches them. Any other profile is a document it could be asked to fetch.
STANDARD_PROFILES = frozenset(
    {
        "https://datapackage.org/profiles/1.0/tableschema.json",
        "https://datapackage.org/profiles/2.0/tableschema.json",
        "https://specs.frictionlessdata.io/schemas/table-schema.json",
        "https://frictionlessdata.io/schemas/table-schema.json",
    }
)
PROFILE_KEYS = frozenset({"$schema", "profile"})
# Keys under which a Frictionless descriptor names another file, URL or data package. A Table Schema needs none (all
# of it is in the descriptor): a schema, field or foreign key holding one is refused.
DOCUMENT_KEYS = frozenset({"path", "extrapaths", "package", "datapackage", "url"})

ResourceName = Annotated[str, StringConstraints(min_length=1)]
OneCharacter = Annotated[str, StringConstraints(min_length=1, max_length=1)]


class TabularDialect(BaseModel):
    """The CSV dialect, keyed as a Frictionless (Table Dialect) descriptor: `quoteChar`, `headerRows`, ...

    Unset keys are left to Frictionless, which sniffs the delimiter and quoting from the first rows.
    """

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel)
    header: bool | None = None
    header_rows: list[PositiveInt] | None = Field(default=None, min_length=1)
    header_join: str | None = None
    header_case: bool | None = None
    comment_char: OneCharacter | None = None
    comment_rows: list[PositiveInt] | None = None
    skip_blank_rows: bool | None = None
    delimiter: OneCharacter | None = None
    line_terminator: Literal["\n", "\r\n", "\r"] | None = None
    # "" reads quote characters as data.
    quote_char: Annotated[str, StringConstraints(max_length=1)] | None = None
    double_quote: bool | None = None
    escape_char: OneCharacter | None = None
    null_sequence: str | None = None
    skip_initial_space: bool | None = None

    def to_frictionless(self) -> Dialect:
        try:
            return Dialect.from_descriptor(self.model_dump(by_alias=True, exclude_none=True))
        except FrictionlessException as exc:
            raise ValueError(f"the dialect is not valid: {_reasons(exc)}") from exc


class TabularConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Inline (an object), or the name of the resource file (JSON, or YAML by its .yaml/.yml name) that holds it.
    table_schema: dict[str, Any] | ResourceName = Field(alias="schema")
    dialect: TabularDialect | None = None
    # By default, tsv for a file named *.tsv and csv for any other.
    format: Literal["csv", "tsv"] | None = None

    @field_validator("dialect")
    @classmethod
    def _dialect_is_valid(cls, dialect: TabularDialect | None) -> TabularDialect | None:
        if dialect is not None:
            dialect.to_frictionless()
        return dialect

    @model_validator(mode="after")
    def _inline_schema_is_valid(self) -> TabularConfig:
        # A schema in a resource file is checked when the step runs, the first time the file is at hand.
        if isinstance(self.table_schema, dict):
            table_schema(self.table_schema)
        return self


def table_schema(descriptor: object) -> Schema:
    """The descriptor as a Frictionless Schema; ValueError says why it is not a Table Schema, or why it is refused."""
    if not isinstance(descriptor, dict):
        raise ValueError("a Table Schema is an object")
    if (reference := next(_references(descriptor), None)) is not None:
        pointer, what = reference
        raise ValueError(
            f"the Table Schema refers to {what} at {pointer}: a schema is self-contained, nothing is fetched"
        )
    report = Schema.validate_descriptor(descriptor)
    if not report.valid:
        raise ValueError("the Table Schema is not valid: " + "; ".join(_describe(e) for e in report.errors))
    try:
        schema = Schema.from_descriptor(descriptor)
    except FrictionlessException as exc:
        raise ValueError(f"the Table Schema is not valid: {_reasons(exc)}") from exc
    if not schema.fields:
        # Frictionless would infer the fields from the data instead, which checks nothing the author wrote.
        raise ValueError("the Table Schema has no fields")
    return schema


def _references(descriptor: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(JSON Pointer, what it names) for every place in a Table Schema that names a document outside it."""
    for key in sorted(PROFILE_KEYS & descriptor.keys()):
        if descriptor[key] not in STANDARD_PROFILES:
            yield f"/{key}", f"the profile {descriptor[key]!r}"
    places: list[tuple[str, object]] = [("", descriptor)]
    places.extend((f"/fields/{index}", field) for index, field in enumerate(_items(descriptor.get("fields"))))
    for index, foreign_key in enumerate(_items(descriptor.get("foreignKeys"))):
        reference = foreign_key.get("reference") if isinstance(foreign_key, dict) else None
        places.extend([(f"/foreignKeys/{index}", foreign_key), (f"/foreignKeys/{index}/reference", reference)])
        # The step has one table: a foreign key can only reference the table itself ("").
        if isinstance(reference, dict) and reference.get("resource") not in (None, ""):
            yield f"/foreignKeys/{index}/reference/resource", f"the resource {reference['resource']!r}"
    for pointer, place in places:
        if isinstance(place, dict):
            for key in sorted(DOCUMENT_KEYS & place.keys()):
                yield f"{pointer}/{key}", f"{key} {place[key]!r}"
    yield from _outward_refs(descriptor, "")


def _items(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _outward_refs(node: object, pointer: str) -> Iterator[tuple[str, str]]:
    """Every `$ref` that leaves its document (a field's `jsonSchema` constraint may hold one): only `#...` stays."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                yield here, f"the reference {value!r}"
            yield from _outward_refs(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _outward_refs(item, f"{pointer}/{index}")


def _describe(error: Error) -> str:
    return f"{error.type}: {error.note}"


def _reasons(exc: FrictionlessException) -> str:
    reasons = exc.reasons or [exc.error]
    return "; ".join(_describe(e) for e in reasons)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


class _Offline:
    """Frictionless' HTTP session while it validates: every request it could make is refused."""

    def __getattr__(self, method: str) -> Callable[..., NoReturn]:
        def refuse(url: object = None, *args: object, **kwargs: object) -> NoReturn:
            raise ConnectionRefusedError(f"the tabular validator fetches nothing (HTTP {method} {url})")

        return refuse


class _Seal:
    """Frictionless untrusted (no unsafe path in a descriptor), offline, and reporting errors instead of raising them.

    Its settings are process-wide and inline runs share the process in threads: they are put in place when the first
    validation starts and put back when the last one ends (Frictionless' own use_context, nested across threads, would
    put back whatever was in place when each began, and only when left without an exception).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._settings: AbstractContextManager[object] | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._settings is None:
                self._settings = system.use_context(trusted=False, onerror="ignore", http_session=_Offline())
                self._settings.__enter__()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._settings is not None:
                    self._settings.__exit__(None, None, None)
                    self._settings = None


_sealed = _Seal()


class _Findings:
    """Frictionless' errors as findings: the first MAX_FINDINGS listed, every one counted."""

    def __init__(self, role: str, primary_key: list[str]) -> None:
        self.role = role
        self.primary_key = primary_key
        self.messages: list[Message] = []
        self.total = 0

    def add(self, error: Error) -> None:
        self.total += 1
        if len(self.messages) < MAX_FINDINGS:
            self.messages.append(
                Message(
                    severity=Severity.ERROR,
                    code=CODE_PREFIX + error.type,
                    text=_clip(error.message),
                    location=_location(error, self.role, self.primary_key),
                )
            )

    def listed(self) -> list[Message]:
        if self.total <= MAX_FINDINGS:
            return self.messages
        summary = Message(
            severity=Severity.INFO,
            code=LIMIT_CODE,
            text=f"{self.total} errors in all; the first {MAX_FINDINGS} are listed",
            location=Location(file_role=self.role),
        )
        return [*self.messages, summary]


def _location(error: Error, role: str, primary_key: list[str]) -> Location:
    """Row number as the line (the header's row for a label error); the field's name as the path (a key's names,
    comma-separated) and its position as the column."""
    if isinstance(error, errors.RowError):
        line: int | None = error.row_number
    elif isinstance(error, errors.HeaderError):
        line = error.row_numbers[0] if error.row_numbers else None
    else:
        line = None
    if isinstance(error, errors.CellError | errors.LabelError):
        # An extra cell or label has no field: its name is "".
        return Location(file_role=role, line=line, column=error.field_number, path=error.field_name or None)
    if isinstance(error, errors.PrimaryKeyError):
        return Location(file_role=role, line=line, path=",".join(primary_key))
    if isinstance(error, errors.ForeignKeyError):
        return Location(file_role=role, line=line, path=",".join(error.field_names))
    return Location(file_role=role, line=line)


class TabularValidator:
    id: ClassVar[str] = "tabular"
    type: ClassVar[str] = "tabular"
    version: ClassVar[str] = "1"
    mode: ClassVar[Literal["inline", "job"]] = "inline"
    config_model: ClassVar[type[BaseModel]] = TabularConfig

    def validate(self, context: ValidationContext) -> ValidationResult:
        config = parse_config(self, context.inputs)
        assert isinstance(config, TabularConfig)
        schema = _schema(config, context.resources)
        dialect = config.dialect.to_frictionless() if config.dialect is not None else Dialect()
        primary = context.primary()
        table_format = config.format or ("tsv" if primary.ref.name.lower().endswith(".tsv") else "csv")
        findings = _Findings(primary.ref.role, schema.primary_key)
        rows = columns = 0
        timed_out = False
        with _sealed(), primary.path.open("rb") as stream:
            resource = TableResource(data=stream, format=table_format, schema=schema, dialect=dialect)
            try:
                resource.open()
            except FrictionlessException as exc:
                # Unreadable as a table at all: an encoding, format or source error.
                findings.add(exc.error)
            else:
                with resource:
                    timed_out = _check_rows(resource, findings, context)
                    rows = resource.stats.rows or 0
                    # The file's columns are its header's labels; without a header, the schema's fields.
                    columns = len(resource.labels) if resource.dialect.header else len(resource.schema.fields)
        result = ValidationResult(
            messages=findings.listed(),
            metrics=[
                Metric(name="rows", value=rows, unit="count"),
                Metric(name="columns", value=columns, unit="count"),
                Metric(name="errors", value=findings.total, unit="count"),
            ],
        )
        if timed_out:
            result.runtime_error = (
                f"the table was still being validated when the step's {context.timeout_seconds} s timeout ran out "
                f"(after {rows} rows)"
            )
            result.timed_out = True
        return result


def _check_rows(resource: TableResource, findings: _Findings, context: ValidationContext) -> bool:
    """Run Frictionless' checks over the open table, one row at a time; True if the step's time ran out first.

    Resource.validate would hold every error in a list (and stop counting at its limit): this loop is its own, keeping
    only what a finding needs.
    """
    checks = Checklist().connect(resource)
    for check in checks:
        for error in check.validate_start():
            findings.add(error)
    try:
        for count, row in enumerate(resource.row_stream, start=1):
            for check in checks:
                for error in check.validate_row(row):
                    findings.add(error)
            if count % CLOCK_EVERY_ROWS == 0:
                context.check_budget()
                if context.seconds_left() <= 0:
                    return True
    except FrictionlessException as exc:
        # The rest of the file cannot be read (bytes past the detected encoding, say): what came before stands.
        findings.add(exc.error)
        return False
    for check in checks:
        for error in check.validate_end():
            findings.add(error)
    return False


def _schema(config: TabularConfig, resources: dict[str, Path]) -> Schema:
    if isinstance(config.table_schema, dict):
        descriptor: object = config.table_schema
        source = "the schema"
    else:
        name = config.table_schema
        path = resources.get(name)
        if path is None:
            raise ConfigError(f"the schema {name!r} is not one of the step's resource files")
        source = f"the schema {name!r}"
        try:
            text = path.read_text(encoding="utf-8")
            descriptor = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"{source} cannot be read: {exc}") from exc
    try:
        return table_schema(descriptor)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
