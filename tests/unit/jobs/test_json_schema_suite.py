"""The JSON-Schema-Test-Suite's required draft 2020-12 cases, each through the json-schema validator.

Every file under remotes/ is one of the step's resource files, found under http://localhost:1234/ as the suite expects:
the suite's remote references are answered by resource files, never fetched.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobs.validators.base import ConfigError, InputFile, ValidationContext
from jobs.validators.json_schema import JsonSchemaValidator
from schemas.enums import Severity
from schemas.envelopes import FileRef
from tests.support import CORPORA

SUITE = CORPORA / "json-schema"
TESTS = SUITE / "tests" / "draft2020-12"
REMOTES = SUITE / "remotes"
REMOTES_BASE_URI = "http://localhost:1234/"


@dataclass(frozen=True)
class Case:
    file: str
    group: str
    description: str
    schema: Any
    data: Any
    valid: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return self.file, self.group, self.description


@dataclass(frozen=True)
class KnownFailure:
    reason: str
    # Part of what the validator does instead (see outcome()): the list stays honest only while it still does it.
    outcome: str


_UNICODE_PROPERTY_ESCAPE = (
    "the pattern uses an ECMA-262 Unicode property escape (\\p{Letter}), which Python's re, the regex engine of "
    "jsonschema's pattern keyword and regex format, does not have: the metaschema check refuses the schema as "
    "configuration before any document is validated"
)
_REFUSED_PATTERN = r"the schema is not a valid JSON Schema: '^\\p{Letter}+$' is not a 'regex'"

# Cases the validator cannot pass, for reasons of principle; each must still fail exactly this way.
KNOWN_FAILURES: dict[tuple[str, str, str], KnownFailure] = {
    **{
        ("pattern.json", "pattern with Unicode property escape requires unicode mode", case): KnownFailure(
            _UNICODE_PROPERTY_ESCAPE, _REFUSED_PATTERN
        )
        for case in ("ASCII letters match", "Non-ASCII letters match", "Digits do not match")
    },
    **{
        ("patternProperties.json", "patternProperties with Unicode property escape", case): KnownFailure(
            _UNICODE_PROPERTY_ESCAPE, _REFUSED_PATTERN
        )
        for case in ("Unicode letter property name matches", "Non-letter property name does not match pattern")
    },
    (
        "vocabulary.json",
        "schema that uses custom metaschema with with no validation vocabulary",
        "no validation: invalid number, but it still validates",
    ): KnownFailure(
        "jsonschema does not implement $vocabulary (its own suite run skips this case): a metaschema that leaves out "
        "the validation vocabulary does not switch minimum off",
        "invalid: json-schema.minimum",
    ),
}


def suite_cases() -> list[Case]:
    return [
        Case(path.name, group["description"], test["description"], group["schema"], test["data"], test["valid"])
        for path in sorted(TESTS.glob("*.json"))
        for group in json.loads(path.read_bytes())
        for test in group["tests"]
    ]


CASES = suite_cases()
# The suite's remotes, read in place, by their path under remotes/ (as a workflow names its resource files).
REMOTE_RESOURCES = {path.relative_to(REMOTES).as_posix(): path for path in sorted(REMOTES.rglob("*")) if path.is_file()}


def outcome(case: Case, tmp_path: Path) -> str:
    """'valid', 'invalid: ' and the codes of its ERROR findings, or 'refused: ' and why the config was refused."""
    document = json.dumps(case.data).encode()
    path = tmp_path / "instance.json"
    path.write_bytes(document)
    ref = FileRef(
        name="instance.json", role="primary", uri="gs://b/instance.json", size_bytes=len(document), sha256="0" * 64
    )
    context = ValidationContext(
        files=[InputFile(ref, path)],
        inputs={"schema": case.schema, "resources_base_uri": REMOTES_BASE_URI},
        workdir=tmp_path,
        timeout_seconds=60,
        deadline=time.monotonic() + 60,
        resources=REMOTE_RESOURCES,
    )
    try:
        result = JsonSchemaValidator().validate(context)
    except ConfigError as exc:
        return f"refused: {exc}"
    assert result.runtime_error is None
    errors = sorted({m.code for m in result.messages if m.severity == Severity.ERROR})
    return f"invalid: {', '.join(errors)}" if errors else "valid"


def as_the_suite_expects(found: str, valid: bool) -> bool:
    # A refused schema is neither verdict.
    return found == "valid" if valid else found.startswith("invalid: ")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file}: {c.group}: {c.description}" for c in CASES])
def test_suite_case(case: Case, tmp_path: Path) -> None:
    found = outcome(case, tmp_path)
    known = KNOWN_FAILURES.get(case.key)
    if known is None:
        assert as_the_suite_expects(found, case.valid), found
    else:
        assert known.outcome in found
        assert not as_the_suite_expects(found, case.valid)


def test_the_suite_is_all_there() -> None:
    # A corpus gone missing would otherwise pass as an empty parametrization.
    assert len({c.file for c in CASES}) == 46
    assert len(CASES) > 1200
    assert len(REMOTE_RESOURCES) == 79


def test_every_known_failure_is_a_case_of_the_suite() -> None:
    assert set(KNOWN_FAILURES) <= {c.key for c in CASES}
