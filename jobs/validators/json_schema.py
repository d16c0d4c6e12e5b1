"""JSON Schema validation (draft 2020-12 and draft-07). One ERROR finding per violation, located by JSON Pointer.

The document is read as JSON, not as Python's superset of it: NaN and Infinity, decimals beyond a double's range (which
Python reads as infinity) and integers too long to convert are ERROR findings located by line and column, and the
document is not validated. A key an object repeats is a WARNING located by JSON Pointer; the last value is the one
validated, as with every parser.

The schema is inline in the step's config (an object, or true or false) or one of the step's resource files, named by
its path relative to the workflow file. A `$ref` resolves among the resource files only, never over the network or from
the file system: each resource that is a valid schema is known by the URI of its name under `resources_base_uri`, and
by its `$id` (and its subschemas' `$id`s) if it declares one. An inline schema lives at `resources_base_uri` itself, the
workflow file's folder, and a resource schema at its name's URI, so a relative reference finds a sibling resource as it
would on disk. A reference to anything else is an ERROR finding, and validation stops there. `format` is an annotation
unless `format_assertion` asks for the formats of ASSERTED_FORMATS to be checked.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from fractions import Fraction
from functools import cache, partial
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote, urljoin, urlsplit

import attrs
import jsonschema
from jsonschema import FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema_specifications import REGISTRY as METASCHEMAS
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator, model_validator
from referencing import Registry, Resource, Specification
from referencing.exceptions import InvalidAnchor, NoSuchAnchor, NoSuchResource, PointerToNowhere, Unresolvable
from referencing.jsonschema import specification_with

from jobs.validators.base import ConfigError, ValidationContext, ValidationResult, parse_config
from schemas.enums import Severity
from schemas.envelopes import Location, Message, Metric

MAX_MESSAGE_CHARS = 500
# The most digits an integer may have: Python's own default for int(), whose cost beyond that grows quadratically.
MAX_INTEGER_DIGITS = 4300
# How much of a refused number literal a message quotes.
QUOTED_LITERAL_CHARS = 40

_DRAFTS: dict[str, type[jsonschema.protocols.Validator]] = {
    "2020-12": jsonschema.Draft202012Validator,
    "draft-07": jsonschema.Draft7Validator,
}

# Hierarchical, because urljoin, which resolves references, leaves a relative reference against a urn: base unresolved;
# under .invalid (RFC 2606), a name that resolves nowhere, though nothing under it is ever fetched.
DEFAULT_RESOURCES_BASE_URI = "https://resources.validibot.invalid/"

# What format_assertion asserts: the formats jsonschema checks with the packages installed here, pinned so that a
# dependency arriving later cannot change a verdict. email and idn-email only require an "@"; date is an RFC 3339
# full-date; ipv4 and ipv6 as Python's ipaddress reads them (no zone id); regex as Python's re compiles it; idn-hostname
# as IDNA 2008 encodes it; uuid (2020-12 only) with its hyphens in place. Every other format (date-time, time, duration,
# hostname, uri, uri-reference, iri, json-pointer, uri-template, ...) stays an annotation.
ASSERTED_FORMATS = frozenset({"date", "email", "idn-email", "idn-hostname", "ipv4", "ipv6", "regex", "uuid"})

# The keyword a violation is reported under when a subschema is `false`: jsonschema names none.
FALSE_SCHEMA = "false_schema"

# Outside strings, a JSON text that Python's json reads holds no digits but numbers and no letters but true, false,
# null and the constants, so matching every string keeps the rest of the match aligned with what the parser saw.
_TOKEN = re.compile(
    r'"(?:[^"\\]++|\\.)*+"'
    r"|(?P<constant>NaN|-?Infinity)"
    r"|(?P<number>-?[0-9]++(?P<real>(?:\.[0-9]++)?(?:[eE][-+]?[0-9]++)?))"
)

Schema = dict[str, Any] | bool
# A resource file's name: its path relative to the workflow file.
ResourceName = Annotated[str, StringConstraints(min_length=1)]


class JsonSchemaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # Inline (an object, or true or false), or the name of the resource file that holds it.
    json_schema: dict[str, Any] | StrictBool | ResourceName = Field(alias="schema")
    draft: Literal["2020-12", "draft-07"] | None = None
    # Names or globs, which applying the workflow resolves into the step's resource files.
    resources: list[ResourceName] = []
    format_assertion: bool = False
    resources_base_uri: str = DEFAULT_RESOURCES_BASE_URI

    @field_validator("resources_base_uri")
    @classmethod
    def _base_uri_is_a_folder(cls, uri: str) -> str:
        # Resource names are appended to it, and relative references must resolve against it as paths do.
        parts = urlsplit(uri)
        if not parts.scheme or parts.query or parts.fragment or not uri.endswith("/") or urljoin(uri, "a") != uri + "a":
            raise ValueError("resources_base_uri must be an absolute hierarchical URI ending in '/'")
        return uri

    @model_validator(mode="after")
    def _inline_schema_is_valid(self) -> JsonSchemaConfig:
        # A schema in a resource file is checked when the step runs, the first time the file is at hand.
        if not isinstance(self.json_schema, str):
            check_schema(validator_class_for(self.draft, self.json_schema), self.json_schema)
        return self


def validator_class_for(draft: str | None, schema: Schema) -> type[jsonschema.protocols.Validator]:
    """The configured draft's, else the one the schema's $schema names, else 2020-12."""
    if draft is not None:
        return _DRAFTS[draft]
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


# Checking a schema against its metaschema costs about 25 ms for a small one, and a workflow's schema is checked by
# intake and again by every run of its step, as are its resource files: a schema once checked is remembered by its
# digest (bounded), with why it is not valid, or None.
MAX_REMEMBERED_SCHEMAS = 1024
_checked_schemas: dict[tuple[type[jsonschema.protocols.Validator], str], str | None] = {}


def check_schema(validator_class: type[jsonschema.protocols.Validator], schema: Schema) -> None:
    """Raise ValueError saying why `schema` is not a valid schema of its draft."""
    key = (validator_class, hashlib.sha256(json.dumps(schema, sort_keys=True, allow_nan=True).encode()).hexdigest())
    if key not in _checked_schemas:
        if len(_checked_schemas) >= MAX_REMEMBERED_SCHEMAS:
            _checked_schemas.clear()
        try:
            validator_class.check_schema(schema)
            _checked_schemas[key] = None
        except SchemaError as exc:
            _checked_schemas[key] = f"the schema is not a valid JSON Schema: {exc.message}"
    if (invalid := _checked_schemas[key]) is not None:
        raise ValueError(invalid)


def json_pointer(path: Iterable[str | int]) -> str:
    """RFC 6901: '' is the document itself; '~' and '/' in keys are escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _quote(literal: str) -> str:
    return literal if len(literal) <= QUOTED_LITERAL_CHARS else literal[: QUOTED_LITERAL_CHARS - 1] + "…"


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Holds the cyclic garbage collector off while messages, which hold no cycles, are built.

    Hundreds of thousands of new objects beside a large document set off full collections over and over: 450,000
    messages took 6.3 s to build with the collector running and 1.4 s without.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _RefusedNumber(Exception):
    """Raised by the parser's hooks, which are not told where the literal is; _refused_numbers finds it."""


def _refuse_constant(literal: str) -> float:
    raise _RefusedNumber(literal)


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _RefusedNumber(literal)
    return value


def _bounded_int(literal: str) -> int:
    if len(literal) > MAX_INTEGER_DIGITS and len(literal.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _RefusedNumber(literal)
    return int(literal)


def _integer_reader() -> tuple[int, Callable[[str], int]]:
    """The digit limit in force, and the parse_int hook that applies it.

    When the interpreter's own limit (sys.set_int_max_str_digits) is at most ours, int() refuses longer literals at
    C speed; a Python hook would add half the parse time to a document of integers.
    """
    interpreter_limit = sys.get_int_max_str_digits()
    if 0 < interpreter_limit <= MAX_INTEGER_DIGITS:
        return interpreter_limit, int
    return MAX_INTEGER_DIGITS, _bounded_int


def _parse(text: str, parse_int: Callable[[str], int]) -> tuple[Any, bool]:
    """The document, and whether an object in it repeats a key.

    Raises _RefusedNumber, or ValueError for an integer past the interpreter's limit, besides what json raises.
    """
    repeats = False

    # Comparing sizes is all a document without repeats pays for; finding where they are is _repeated_keys's work.
    def build_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeats
        obj = dict(pairs)
        if len(obj) != len(pairs):
            repeats = True
        return obj

    document = json.loads(
        text,
        object_pairs_hook=build_object,
        parse_int=parse_int,
        parse_float=_finite_float,
        parse_constant=_refuse_constant,
    )
    return document, repeats


def _refusal(token: re.Match[str], digit_limit: int) -> tuple[str, str] | None:
    """The code and text of the finding for a literal the document may not contain, or None."""
    if (constant := token["constant"]) is not None:
        return "json.non_finite_number", f"{constant} is not a JSON number"
    if (number := token["number"]) is None:
        return None
    if token["real"]:
        if math.isinf(float(number)):
            return "json.number_out_of_range", f"{_quote(number)} is beyond the range of a double-precision number"
        return None
    digits = len(number.lstrip("-"))
    if digits > digit_limit:
        return "json.number_too_long", f"an integer of {digits} digits is longer than the {digit_limit} allowed"
    return None


@_collector_paused()
def _refused_numbers(text: str, digit_limit: int, role: str) -> list[Message]:
    """One ERROR per refused literal in the text, in order, located as json locates a syntax error."""
    messages: list[Message] = []
    line, line_start, scanned = 1, 0, 0
    for token in _TOKEN.finditer(text):
        refusal = _refusal(token, digit_limit)
        if refusal is None:
            continue
        offset = token.start()
        # Counting from the last finding keeps a document full of them linear.
        line += text.count("\n", scanned, offset)
        line_start = max(line_start, text.rfind("\n", scanned, offset) + 1)
        scanned = offset
        code, reason = refusal
        messages.append(
            Message(
                severity=Severity.ERROR,
                code=code,
                text=f"{reason}; the document was not validated",
                location=Location(file_role=role, line=line, column=offset - line_start + 1),
            )
        )
    return messages


# A path as a link: the parent's path and the key or index under it. Only a repeat's path is spelled out as a JSON
# Pointer, which keeps the walk linear however deep the document is.
_Path = tuple[Any, str | int] | None


@_collector_paused()
def _repeated_keys(text: str, role: str) -> list[Message]:
    """One WARNING per key an object repeats, at the key's first appearance, located by its JSON Pointer.

    The text is read again with each object as a tuple of its pairs, which keeps every member, so that repeats inside a
    value a later repeat replaced are found too. Its numbers were checked by the first read.
    """
    tree = json.loads(text, object_pairs_hook=tuple)
    messages: list[Message] = []
    # Members still to visit, the next one last: its path, its value, and how often its key appears if it repeats and
    # this is where it first appears, else 0.
    stack: list[tuple[_Path, Any, int]] = [(None, tree, 0)]
    while stack:
        path, value, times = stack.pop()
        if times:
            assert path is not None
            messages.append(
                Message(
                    severity=Severity.WARNING,
                    code="json.duplicate_key",
                    text=_clip(f"key {path[1]!r} appears {times} times in one object; the last value is used"),
                    location=Location(file_role=role, path=_spell(path)),
                )
            )
        stack.extend(reversed(_members(path, value)))
    return messages


def _members(path: _Path, value: Any) -> list[tuple[_Path, Any, int]]:
    """The members worth visiting: those that hold members, and where a repeated key first appears."""
    if isinstance(value, list):
        return [((path, index), item, 0) for index, item in enumerate(value) if isinstance(item, list | tuple)]
    if not isinstance(value, tuple):
        return []
    if len({key for key, _ in value}) == len(value):
        return [((path, key), item, 0) for key, item in value if isinstance(item, list | tuple)]
    times = Counter(key for key, _ in value)
    # pop: a key's count goes with its first appearance only.
    return [((path, key), item, count if (count := times.pop(key, 0)) > 1 else 0) for key, item in value]


def _spell(path: _Path) -> str:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    return json_pointer(reversed(keys))


def _multiple_of(
    checked: Callable[..., Iterator[ValidationError]],
) -> Callable[..., Iterator[ValidationError]]:
    """jsonschema's multipleOf, exact for integers too large for a float, which it raises OverflowError for."""

    def multiple_of(
        validator: jsonschema.protocols.Validator, multiple: float, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        try:
            yield from checked(validator, multiple, instance, schema)
        except OverflowError:
            if (Fraction(instance) / Fraction(multiple)).denominator != 1:
                yield ValidationError(f"{instance!r} is not a multiple of {multiple}")

    return multiple_of


# The inline time budget of the validation running in this context (ValidationContext.check_budget).
_BUDGET: ContextVar[Callable[[], None]] = ContextVar("json_schema_budget", default=lambda: None)
# Keywords that descend into the document: the budget is checked at each, so a large document stays interruptible
# between its parts whether or not it has violations, and the cheap leaf keywords pay nothing.
_DESCENDING = (
    "items",
    "prefixItems",
    "additionalItems",
    "properties",
    "patternProperties",
    "additionalProperties",
    "contains",
    "unevaluatedItems",
    "unevaluatedProperties",
)


def _budgeted(
    checked: Callable[..., Iterator[ValidationError]],
) -> Callable[..., Iterator[ValidationError]]:
    def budgeted(
        validator: jsonschema.protocols.Validator, value: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        _BUDGET.get()()
        yield from checked(validator, value, instance, schema)

    return budgeted


_hardened_classes: set[type[jsonschema.protocols.Validator]] = set()


@cache
def _hardened(base: type[jsonschema.protocols.Validator]) -> type[jsonschema.protocols.Validator]:
    """The draft's validator class, with multipleOf exact for integers too large for a float, the inline time budget
    checked as it descends, and false subschemas' violations located; all of it kept in subschemas of other drafts."""
    keywords = {k: _budgeted(base.VALIDATORS[k]) for k in _DESCENDING if k in base.VALIDATORS}
    keywords["multipleOf"] = _multiple_of(base.VALIDATORS["multipleOf"])
    hardened = jsonschema.validators.extend(base, keywords)
    hardened.evolve = _evolve_hardened
    hardened.descend = _locating_false_schemas(hardened.descend)
    _hardened_classes.add(hardened)
    return hardened


def _locating_false_schemas(
    descend: Callable[..., Iterator[ValidationError]],
) -> Callable[..., Iterator[ValidationError]]:
    """jsonschema's descend, with a false subschema's violation located where the subschema applies: its own leaves
    out the key or index it descended by, and the finding would be at the parent."""

    def descend_locating(
        validator: jsonschema.protocols.Validator,
        instance: Any,
        schema: Any,
        path: str | int | None = None,
        schema_path: str | int | None = None,
        resolver: Any = None,
    ) -> Iterator[ValidationError]:
        for error in descend(validator, instance, schema, path, schema_path, resolver):
            if schema is False and path is not None and not error.path:
                error.path.appendleft(path)
            yield error

    return descend_locating


def _evolve_hardened(validator: jsonschema.protocols.Validator, **changes: Any) -> jsonschema.protocols.Validator:
    """jsonschema's evolve, but hardened: its own gives a subschema that names its $schema (as most resource files do)
    that draft's plain class, which would validate everything below it unhardened."""
    schema = changes.setdefault("schema", validator.schema)
    chosen = jsonschema.validators.validator_for(schema, default=type(validator))
    for field in attrs.fields(type(validator)):
        if field.init:
            changes.setdefault(field.alias, getattr(validator, field.name))
    return (chosen if chosen in _hardened_classes else _hardened(chosen))(**changes)


class JsonSchemaValidator:
    id: ClassVar[str] = "json-schema"
    type: ClassVar[str] = "json-schema"
    version: ClassVar[str] = "1"
    mode: ClassVar[Literal["inline", "job"]] = "inline"
    config_model: ClassVar[type[BaseModel]] = JsonSchemaConfig

    def validate(self, context: ValidationContext) -> ValidationResult:
        config = parse_config(self, context.inputs)
        assert isinstance(config, JsonSchemaConfig)
        schema, schema_uri = _schema(config, context.resources)
        primary = context.primary()
        role = primary.ref.role
        raw = primary.path.read_bytes()
        try:
            # Decoded as json.loads decodes bytes, so that offsets into the text are the parser's.
            text = raw.decode(json.detect_encoding(raw), "surrogatepass")
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
        digit_limit, parse_int = _integer_reader()
        try:
            document, repeats = _parse(text, parse_int)
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
        except RecursionError:
            return _too_deep(primary.ref.name, role)
        # JSONDecodeError is a ValueError too; the only other one json raises is int()'s, past the interpreter's limit.
        except (_RefusedNumber, ValueError):
            messages = _refused_numbers(text, digit_limit, role)
            assert messages, "the parser refused a number the scan does not refuse"
            return ValidationResult(messages=messages)

        validator = _validator(config, schema, schema_uri, context.resources)
        context.check_budget()
        budget = _BUDGET.set(context.check_budget)
        # Only what a message needs is kept: a ValidationError holds its schema, instance and parents, which for
        # hundreds of thousands of violations is gigabytes.
        violations: list[tuple[tuple[str | int, ...], str, str]] = []
        unresolved: Unresolvable | None = None
        try:
            for error in validator.iter_errors(document):
                violations.append((tuple(error.absolute_path), error.validator or FALSE_SCHEMA, error.message))
        except Unresolvable as exc:
            # Validation stops at the reference; what it found before is still reported.
            unresolved = exc
        except RecursionError:
            return _too_deep(primary.ref.name, role)
        finally:
            _BUDGET.reset(budget)
        messages = _repeated_keys(text, role) if repeats else []
        messages.extend(_violations(violations, role))
        if unresolved is not None:
            messages.append(_unresolvable(unresolved, role))
        return ValidationResult(
            messages=messages,
            metrics=[Metric(name="schema_violations", value=len(violations), unit="count")],
        )


def _schema(config: JsonSchemaConfig, resources: dict[str, Path]) -> tuple[Schema, str]:
    """The schema, checked against its metaschema, and the URI its relative references resolve against."""
    if not isinstance(config.json_schema, str):
        return config.json_schema, config.resources_base_uri
    name = config.json_schema
    path = resources.get(name)
    if path is None:
        raise ConfigError(f"the schema {name!r} is not one of the step's resource files")
    try:
        schema = _read_json(path)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"the schema {name!r} is not JSON: {exc}") from exc
    if not isinstance(schema, dict | bool):
        raise ConfigError(f"the schema {name!r} is not a JSON Schema: a schema is an object or a boolean")
    try:
        check_schema(validator_class_for(config.draft, schema), schema)
    except ValueError as exc:
        raise ConfigError(f"the schema {name!r}: {exc}") from exc
    return schema, _resource_uri(config.resources_base_uri, name)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _resource_uri(base_uri: str, name: str) -> str:
    return base_uri + quote(name)


class _NotASchema(Exception):
    """A reference to a resource file that holds JSON but not a valid schema, which is not in the registry: crawling it
    may crash (an $id that is not a string, properties that are a list), and so may validating against it."""


def _refuse_retrieval(not_schemas: dict[str, str], uri: str) -> Resource[Any]:
    """What the registry does with a URI no schema answers to: nothing is ever fetched."""
    if uri in not_schemas:
        raise _NotASchema(not_schemas[uri])
    raise NoSuchResource(ref=uri)


def _resource_registry(
    resources: dict[str, Path], base_uri: str, validator_class: type[jsonschema.protocols.Validator]
) -> Registry[Any]:
    """Every resource file that holds a valid schema, under its name's URI, of its $schema's draft, else the step's;
    crawling the registry adds each `$id` it declares. The drafts' own metaschemas, which jsonschema ships, win over a
    resource that claims their URI."""
    specification = _specification(validator_class)
    schemas = []
    not_schemas: dict[str, str] = {}
    for name, path in sorted(resources.items()):
        try:
            contents = _read_json(path)
        except (ValueError, RecursionError):
            continue  # not JSON: a resource for another purpose, which no reference can use
        if not isinstance(contents, dict | bool):
            continue
        uri = _resource_uri(base_uri, name)
        try:
            check_schema(jsonschema.validators.validator_for(contents, default=validator_class), contents)
        except ValueError as exc:
            not_schemas[uri] = f"names the resource file {name!r}, but {exc}"
            continue
        schemas.append((uri, Resource.from_contents(contents, default_specification=specification)))
    registry: Registry[Any] = Registry(retrieve=partial(_refuse_retrieval, not_schemas))
    return registry.with_resources(schemas).combine(METASCHEMAS)


@cache
def _specification(validator_class: type[jsonschema.protocols.Validator]) -> Specification[Any]:
    return specification_with(validator_class.ID_OF(validator_class.META_SCHEMA))


@cache
def _format_checker(validator_class: type[jsonschema.protocols.Validator]) -> FormatChecker:
    """The draft's own checks of ASSERTED_FORMATS."""
    draft_checks = validator_class.FORMAT_CHECKER.checkers
    checker = FormatChecker(formats=())
    checker.checkers = {name: draft_checks[name] for name in ASSERTED_FORMATS & draft_checks.keys()}
    return checker


def _validator(
    config: JsonSchemaConfig, schema: Schema, schema_uri: str, resources: dict[str, Path]
) -> jsonschema.protocols.Validator:
    validator_class = validator_class_for(config.draft, schema)
    specification = _specification(validator_class)
    root = specification.create_resource(schema)
    root_uri = urljoin(schema_uri, root.id() or "")
    # Crawled once, here: a registry with resources not yet crawled crawls them all at every reference it does not
    # know by its URI yet (by $id or anchor), each time the reference is followed.
    registry = (
        _resource_registry(resources, config.resources_base_uri, validator_class).with_resource(root_uri, root).crawl()
    )
    # jsonschema roots a schema without $id at "", against which a relative reference names nothing: the schema is
    # rooted here where it lives, as jsonschema roots one whose $id is that URI. The registry goes in too, so that
    # nothing jsonschema may derive from its own default, which fetches over the network, is ever used.
    resolver = registry.resolver(base_uri=root_uri)
    return _hardened(validator_class)(
        schema,
        format_checker=_format_checker(validator_class) if config.format_assertion else None,
        registry=registry,
        _resolver=resolver,
    )


def _unresolvable(exc: Unresolvable, role: str) -> Message:
    return Message(
        severity=Severity.ERROR,
        code="json-schema.unresolvable_ref",
        text=_clip(f"{_unresolvable_because(exc)}; validation stopped there"),
        location=Location(file_role=role),
    )


def _unresolvable_because(exc: Unresolvable) -> str:
    # jsonschema and referencing each wrap what went wrong: the reason is down the chain of causes.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, _NotASchema):
            return f"$ref {exc.ref!r} {cause}"
        if isinstance(cause, PointerToNowhere):
            return f"a $ref's JSON Pointer {cause.ref!r} points to nothing in the schema it names"
        if isinstance(cause, NoSuchAnchor | InvalidAnchor):
            return f"a $ref names the anchor {cause.anchor!r}, which {cause.ref!r} does not define"
        cause = cause.__cause__
    return f"$ref {exc.ref!r} names no schema among the step's resource files (references are never fetched)"


@_collector_paused()
def _violations(violations: list[tuple[tuple[str | int, ...], str, str]], role: str) -> list[Message]:
    """One ERROR per violation, ordered by where it is in the document, then by keyword."""
    # Paths compare element by element: two paths that agree up to a point lead to the same object or array there, so
    # their next elements are both keys or both indexes, and indexes sort as numbers.
    violations.sort(key=itemgetter(0, 1))
    return [
        Message(
            severity=Severity.ERROR,
            code=f"json-schema.{keyword}",
            text=_clip(explanation),
            location=Location(file_role=role, path=json_pointer(path)),
        )
        for path, keyword, explanation in violations
    ]


def _too_deep(name: str, role: str) -> ValidationResult:
    return ValidationResult(
        messages=[
            Message(
                severity=Severity.ERROR,
                code="json.depth",
                text=f"{name} nests too deeply to validate",
                location=Location(file_role=role),
            )
        ]
    )
