"""JSON Schema validation (draft 2020-12 and draft-07). One ERROR finding per violation, located by JSON Pointer.

The document is read as JSON, not as Python's superset of it: NaN and Infinity, decimals beyond a double's range (which
Python reads as infinity) and integers too long to convert are ERROR findings located by line and column, and the
document is not validated. A key an object repeats is a WARNING located by JSON Pointer; the last value is the one
validated, as with every parser.
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
from functools import cache
from operator import itemgetter
from typing import Any, ClassVar, Literal

import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError
from pydantic import BaseModel, ConfigDict, Field, model_validator
from referencing.exceptions import Unresolvable

from jobs.validators.base import ValidationContext, ValidationResult, parse_config
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

# Outside strings, a JSON text that Python's json reads holds no digits but numbers and no letters but true, false,
# null and the constants, so matching every string keeps the rest of the match aligned with what the parser saw.
_TOKEN = re.compile(
    r'"(?:[^"\\]++|\\.)*+"'
    r"|(?P<constant>NaN|-?Infinity)"
    r"|(?P<number>-?[0-9]++(?P<real>(?:\.[0-9]++)?(?:[eE][-+]?[0-9]++)?))"
)


class JsonSchemaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    json_schema: dict[str, Any] = Field(alias="schema")
    draft: Literal["2020-12", "draft-07"] | None = None

    @model_validator(mode="after")
    def _schema_is_valid(self) -> JsonSchemaConfig:
        check_schema(self.validator_class(), self.json_schema)
        return self

    def validator_class(self) -> type[jsonschema.protocols.Validator]:
        if self.draft is not None:
            return _DRAFTS[self.draft]
        return jsonschema.validators.validator_for(self.json_schema, default=jsonschema.Draft202012Validator)


# Checking a schema against its metaschema costs about 25 ms for a small one, and a workflow's schema is checked by
# intake and again by every run of its step: a schema once found valid is remembered by its digest (bounded).
MAX_REMEMBERED_SCHEMAS = 1024
_valid_schemas: set[tuple[type[jsonschema.protocols.Validator], str]] = set()


def check_schema(validator_class: type[jsonschema.protocols.Validator], schema: dict[str, Any]) -> None:
    """Raise ValueError saying why `schema` is not a valid schema of its draft."""
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True, allow_nan=True).encode()).hexdigest()
    if (validator_class, digest) in _valid_schemas:
        return
    try:
        validator_class.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"the schema is not a valid JSON Schema: {exc.message}") from exc
    if len(_valid_schemas) >= MAX_REMEMBERED_SCHEMAS:
        _valid_schemas.clear()
    _valid_schemas.add((validator_class, digest))


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


@cache
def _hardened(base: type[jsonschema.protocols.Validator]) -> type[jsonschema.protocols.Validator]:
    """The draft's validator class, with multipleOf exact for integers too large for a float, and the inline time
    budget checked as it descends."""
    keywords = {k: _budgeted(base.VALIDATORS[k]) for k in _DESCENDING if k in base.VALIDATORS}
    keywords["multipleOf"] = _multiple_of(base.VALIDATORS["multipleOf"])
    return jsonschema.validators.extend(base, keywords)


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

        context.check_budget()
        validator = _hardened(config.validator_class())(config.json_schema)
        budget = _BUDGET.set(context.check_budget)
        try:
            # Only what a message needs is kept: a ValidationError holds its schema, instance and parents, which for
            # hundreds of thousands of violations is gigabytes.
            violations = [(tuple(e.absolute_path), e.validator, e.message) for e in validator.iter_errors(document)]
        except Unresolvable as exc:
            # References are resolved inside the schema only; validators never reach the network.
            return ValidationResult(runtime_error=f"the schema has a $ref that cannot be resolved: {exc}")
        except RecursionError:
            return _too_deep(primary.ref.name, role)
        finally:
            _BUDGET.reset(budget)
        messages = _repeated_keys(text, role) if repeats else []
        messages.extend(_violations(violations, role))
        return ValidationResult(
            messages=messages,
            metrics=[Metric(name="schema_violations", value=len(violations), unit="count")],
        )


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
