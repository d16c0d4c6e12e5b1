"""Assertions (DESIGN §12): CEL expressions over a step's results, checked by the runtime right after the validator,
wherever it ran (inline or in a job), so that every validator gets them and the verdict in output.json is whole.

The context: `o` = this step's metrics by name and its outputs; `steps.<key>` = an earlier step's `o`; `submission`
= name, size_bytes, content_type. A false assertion is a finding coded with the assertion's id and its rendered
message; one that cannot be evaluated (a missing metric, a type error, the time limit) is an ERROR finding saying
why. Expressions are compiled when the workflow is applied, so a syntax error never reaches a run.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

import celpy
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from jobs.validators.base import ValidationResult
from schemas.enums import Severity
from schemas.envelopes import AssertionSpec, FileRef, Message

# CEL has no loops, but comprehensions over the outputs nest; each assertion gets this long, message included.
ASSERTION_SECONDS = 1.0
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_ENVIRONMENT = celpy.Environment()


class AssertionTimeout(Exception):
    pass


class AssertionSyntaxError(ValueError):
    """An expression CEL cannot parse: an apply-time error naming the assertion."""


def compile_check(assertion: AssertionSpec) -> None:
    """Raise AssertionSyntaxError when the expression, or a `{{ }}` placeholder of the message, does not parse."""
    for expr in (assertion.expr, *_placeholders(assertion.message)):
        try:
            _ENVIRONMENT.compile(expr)
        except CELParseError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
            raise AssertionSyntaxError(f"assertion {assertion.id!r}: {expr!r} is not valid CEL ({first_line})") from exc


def referenced_outputs(assertion: AssertionSpec) -> set[str]:
    """The names it reads as `o.<name>` (for an apply-time check against what a validator is known to report)."""
    return set(re.findall(r"\bo\.([A-Za-z_][A-Za-z0-9_]*)", assertion.expr))


def step_results(result: ValidationResult) -> dict[str, Any]:
    """A step's `o`: its outputs, then its metrics by name (a metric wins over an output of the same name)."""
    return {**result.outputs, **{metric.name: metric.value for metric in result.metrics}}


def check_assertions(
    assertions: list[AssertionSpec],
    result: ValidationResult,
    *,
    prior_steps: Mapping[str, Mapping[str, Any]],
    submission: FileRef | None,
    seconds: float = ASSERTION_SECONDS,
) -> list[Message]:
    """The findings of the assertions that do not hold (or cannot be evaluated), in their order."""
    if not assertions:
        return []
    activation = {
        "o": celpy.json_to_cel(step_results(result)),
        "steps": celpy.json_to_cel({key: dict(values) for key, values in prior_steps.items()}),
        "submission": celpy.json_to_cel(
            {
                "name": submission.name if submission else "",
                "size_bytes": submission.size_bytes if submission else 0,
                "content_type": (submission.mime_type or "") if submission else "",
            }
        ),
    }
    findings = []
    for assertion in assertions:
        finding = _check(assertion, activation, seconds)
        if finding is not None:
            findings.append(finding)
    return findings


def _check(assertion: AssertionSpec, activation: dict[str, Any], seconds: float) -> Message | None:
    try:
        with _time_limit(seconds):
            held = _evaluate(assertion.expr, activation)
            if not isinstance(held, celpy.celtypes.BoolType):
                raise TypeError(f"it gave {_render(held)}, not true or false")
            if held:
                return None
            text = _message(assertion, activation)
    except AssertionTimeout:
        return _cannot(assertion, f"it took longer than {seconds:g} s to evaluate")
    except Exception as exc:  # CEL's own errors, and whatever else an expression makes its evaluator raise
        return _cannot(assertion, _reason(exc))
    return Message(severity=assertion.severity, code=assertion.id, text=text)


def _cannot(assertion: AssertionSpec, why: str) -> Message:
    return Message(
        severity=Severity.ERROR,
        code=assertion.id,
        text=f"assertion {assertion.id!r} ({assertion.expr}) could not be evaluated: {why}",
    )


def _evaluate(expr: str, activation: dict[str, Any]) -> Any:
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(expr)).evaluate(activation)


def _message(assertion: AssertionSpec, activation: dict[str, Any]) -> str:
    """The message with its placeholders rendered; one that cannot be says so in place, and the finding keeps the
    assertion's own severity (the assertion was evaluated: only its message is incomplete)."""
    if assertion.message is None:
        return f"assertion {assertion.id!r} does not hold: {assertion.expr}"

    def render(match: re.Match[str]) -> str:
        try:
            return _render(_evaluate(match.group(1).strip(), activation))
        except AssertionTimeout:
            raise
        except Exception as exc:
            return f"<{match.group(1).strip()}: {_reason(exc)}>"

    return _PLACEHOLDER.sub(render, assertion.message)


def _placeholders(message: str | None) -> list[str]:
    return [match.strip() for match in _PLACEHOLDER.findall(message or "")]


def _render(value: Any) -> str:
    if isinstance(value, celpy.celtypes.DoubleType):
        return f"{float(value):g}"
    if isinstance(value, celpy.celtypes.BoolType):
        return "true" if value else "false"
    return str(value)


def _reason(exc: Exception) -> str:
    """CEL's own words, without its token names: 'no such member in mapping: 'site_eui''."""
    if isinstance(exc, CELEvalError) and exc.args:
        first = exc.args[0]
        if isinstance(first, str) and first.startswith("found no matching overload"):
            cause = exc.args[2] if len(exc.args) > 2 and exc.args[2] else ()
            return f"the types do not fit ({cause[0]})" if cause else "the types do not fit"
        return str(first)
    return str(exc)


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Stop an evaluation in this thread once `seconds` have passed. CEL runs as Python calls, so a trace function
    that looks at the clock on every call can stop it wherever it is, in any thread (inline runs are not in the
    main thread, where a signal would be the usual tool)."""
    deadline = time.monotonic() + seconds
    previous = sys.gettrace()

    def on_call(frame: FrameType, event: str, arg: object) -> None:
        if time.monotonic() > deadline:
            raise AssertionTimeout
        return None

    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)
