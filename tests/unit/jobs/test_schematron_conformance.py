"""The SchXslt2 conformance test cases through the schematron validator, read in place from the corpus.

A test case holds a schema, documents (the first is the one validated; the others, subordinate documents and
included schemas, are the step's resource files beside the schema), whether the document is valid, invalid, or an
error (the rules cannot be used), an optional phase, and XPath assertions on the SVRL report. The suite for the XSLT 3
query binding (`testsuites/2020-xslt3.xml`, which includes the others) runs, and so do the test cases no suite lists,
later additions for the next edition of ISO Schematron; KNOWN_FAILURES says which fail and why, and each must still
fail as described.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from lxml import etree

from jobs.validators.base import ConfigError, InputFile, ValidationContext
from jobs.validators.sandbox import scratch_directory
from jobs.validators.schematron import DYNAMIC_ERROR_CODE, check
from schemas.envelopes import FileRef
from tests.support import CORPORA

# Resolved, as the suite files resolve their own hrefs: CORPORA may lie behind a symbolic link.
CONFORMANCE = (CORPORA / "schematron-conformance").resolve()
CASES = CONFORMANCE / "testcases"
TS = "{https://doi.org/10.5281/zenodo.5679629#}"
MIN_PASS_RATE = 0.95

# Test case → (why it fails, what the harness sees).
KNOWN_FAILURES = {
    "rule-based-validation/rule-visit-each.xml": (
        "sch:rule/@visit-each (next edition) is not implemented by SchXslt2 1.3.4: the report tests the attribute, "
        "not each of its tokens",
        "expected invalid, got no failed assert or successful report",
    ),
    "schema-composition/schema-phase-from.xml": (
        "sch:phase/@from (next edition) is not implemented by SchXslt2 1.3.4: the rule fires outside the subtree",
        "expected valid, got 1 failed asserts and successful reports",
    ),
    "schema-composition/extends-href-fragment-xml-id-preserve-ns.xml": (
        "SchXslt2 1.3.4 reads a rule extended from another document with the including schema's sch:ns bindings, "
        "where the prefix names another namespace",
        "expected invalid, got no failed assert or successful report",
    ),
    "schema-composition/include-href-fragment-xml-id-preserve-ns.xml": (
        "SchXslt2 1.3.4 does not carry the sch:ns bindings of an included fragment's schema into the validation "
        "stylesheet",
        "could not be compiled: Error in schema.sch: XPST0081 Namespace prefix 'ex' has not been declared",
    ),
}


def suite(path: Path) -> list[Path]:
    """The test cases a test suite lists, its included suites' first."""
    found = []
    for entry in etree.parse(str(path)).getroot():
        if entry.tag == f"{TS}include":
            found += suite((path.parent / entry.get("href")).resolve())
        elif entry.tag == f"{TS}testcase":
            found.append((path.parent / entry.get("href")).resolve())
    return found


SUITE_CASES = suite(CONFORMANCE / "testsuites" / "2020-xslt3.xml")
UNLISTED_CASES = sorted(set(CASES.rglob("*.xml")) - set(SUITE_CASES))
ALL_CASES = SUITE_CASES + UNLISTED_CASES


def name(case: Path) -> str:
    return case.relative_to(CASES).as_posix()


def outcome(case: Path, scratch: Path) -> str | None:
    """None when the validator does what the test case expects, else what it did."""
    testcase = etree.parse(str(case)).getroot()
    expect = testcase.get("expect")
    files = scratch / "inputs"
    schema = next(iter(testcase.find(f"{TS}schemas")))
    (files / "schema.sch").write_bytes(etree.tostring(schema))
    resources = {"schema.sch": files / "schema.sch"}
    documents = []
    for document in testcase.find(f"{TS}documents"):
        path = files / document.get("filename")
        path.write_bytes(etree.tostring(next(iter(document))))
        documents.append(path)
    primary, *others = documents
    resources |= {path.name: path for path in others}
    data = primary.read_bytes()
    ref = FileRef(
        name=primary.name, role="primary", uri="gs://b/x", size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    workdir = scratch / "work"
    workdir.mkdir()
    inputs = {"rules": "schema.sch"} | ({"phase": testcase.get("phase")} if testcase.get("phase") else {})
    context = ValidationContext(
        files=[InputFile(ref, primary)],
        inputs=inputs,
        workdir=workdir,
        timeout_seconds=60,
        deadline=time.monotonic() + 60,
        resources=resources,
    )
    try:
        checked = check(context)
    except ConfigError as exc:
        return None if expect == "error" else str(exc)
    result = checked.result
    dynamic_errors = [m.text for m in result.messages if m.code == DYNAMIC_ERROR_CODE]
    if expect == "error":
        return None if result.runtime_error or dynamic_errors else "expected an error, got none"
    if result.runtime_error or dynamic_errors:
        return result.runtime_error or dynamic_errors[0]
    fired = sum(m.value for m in result.metrics if m.name in ("failed_asserts", "successful_reports"))
    if expect == "valid" and fired:
        return f"expected valid, got {fired:g} failed asserts and successful reports"
    if expect == "invalid" and not fired:
        return "expected invalid, got no failed assert or successful report"
    assert checked.svrl is not None
    for assertion in testcase.iterfind(f"{TS}assertions/{TS}assertion"):
        namespaces = {prefix: uri for prefix, uri in assertion.nsmap.items() if prefix}
        if not checked.svrl.xpath(f"boolean({assertion.get('assert')})", namespaces=namespaces):
            return f"the SVRL does not satisfy {assertion.get('assert')}"
    return None


def test_the_suite_is_there() -> None:
    assert len(SUITE_CASES) == 82
    assert set(KNOWN_FAILURES) <= {name(case) for case in ALL_CASES}


def test_the_pass_rate() -> None:
    passed = len(ALL_CASES) - len(KNOWN_FAILURES)
    assert passed / len(ALL_CASES) >= MIN_PASS_RATE
    # Every failure is outside the suite for the XSLT 3 binding.
    assert not set(KNOWN_FAILURES) & {name(case) for case in SUITE_CASES}


@pytest.mark.parametrize("case", ALL_CASES, ids=name)
def test_conformance_case(case: Path) -> None:
    with scratch_directory() as scratch:
        seen = outcome(case, scratch)
    if name(case) in KNOWN_FAILURES:
        _, expected = KNOWN_FAILURES[name(case)]
        assert seen is not None, "passes now: take it off KNOWN_FAILURES"
        assert expected in seen
    else:
        assert seen is None, seen
