"""EN 16931 (the CEN/TC 434 validation artefacts, UBL binding) through the schematron validator, read in place from
the corpus: every example invoice passes, and every unit test of `test/Invoice-unit-UBL` fires its rule or not as it
expects. Both forms the artefacts ship run: the preprocessed schema (transpiled by SchXslt2) and the validation
stylesheet made from it. The schema with its abstract patterns (`EN16931-UBL-validation.sch` and its five includes)
validates the same, but SchXslt2 takes about 70 s to transpile it, so here its includes are exercised with the code
lists' patterns alone."""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from jobs.validators.base import InputFile, ValidationContext
from jobs.validators.sandbox import scratch_directory
from jobs.validators.schematron import Report, SchematronConfig, SchematronValidator, findings, run_schematron
from schemas.enums import EnvelopeStatus, Severity
from schemas.envelopes import FileRef, Message
from tests.support import CORPORA

CORPUS = CORPORA / "xml" / "en16931-ubl"
UBL = CORPUS / "ubl"
VEFA = "{http://difi.no/xsd/vefa/validator/1.0}"
# The rules by their resource names, relative to ubl/ as a workflow beside that folder would name them.
RULE_FORMS = {
    "preprocessed-sch": "schematron/preprocessed/EN16931-UBL-validation-preprocessed.sch",
    "shipped-xslt": "xslt/EN16931-UBL-validation.xslt",
}
EXAMPLES = sorted([*(UBL / "examples").iterdir(), *(CORPUS / "test" / "testfiles").glob("*.xml")])


@dataclass(frozen=True)
class UnitCase:
    """One `<test>` of a vefa-validator test set: its rule must fire (`error`, `count` times if given) or not."""

    file: str
    number: int
    expect: str
    rule: str
    count: int | None
    fragment: etree._ElementTree

    @property
    def id(self) -> str:
        return f"{self.file}#{self.number}-{self.expect}-{self.rule}"


def unit_cases() -> list[UnitCase]:
    cases = []
    for path in sorted((CORPUS / "test" / "Invoice-unit-UBL").glob("*.xml")):
        for number, test in enumerate(etree.parse(str(path)).getroot().iterfind(f"{VEFA}test"), start=1):
            expectation = test.find(f"{VEFA}assert/{VEFA}success")
            if expectation is None:
                expectation = test.find(f"{VEFA}assert/{VEFA}error")
            fragment = next(e for e in test if isinstance(e.tag, str) and e.tag != f"{VEFA}assert")
            count = expectation.get("number")
            cases.append(
                UnitCase(
                    file=path.stem,
                    number=number,
                    expect=etree.QName(expectation).localname,
                    rule=(expectation.text or "").strip(),
                    count=None if count is None else int(count),
                    # A copy keeps the namespaces in scope where it stood.
                    fragment=etree.ElementTree(copy.deepcopy(fragment)),
                )
            )
    return cases


UNIT_CASES = unit_cases()


def test_the_corpus_is_there() -> None:
    assert len(EXAMPLES) >= 10
    assert len(UNIT_CASES) >= 70
    assert {c.expect for c in UNIT_CASES} == {"success", "error"}


@pytest.fixture(scope="module", params=sorted(RULE_FORMS))
def reports(request: pytest.FixtureRequest) -> dict[str, Report]:
    """Every example and unit case, validated in one run of the engine, which compiles the rules once."""
    rules = RULE_FORMS[request.param]
    documents = [(path.name, etree.parse(str(path))) for path in EXAMPLES]
    documents += [(f"{case.id}.xml", case.fragment) for case in UNIT_CASES]
    with scratch_directory() as scratch:
        workdir = scratch / "work"
        workdir.mkdir()
        found = run_schematron(SchematronConfig(rules=rules), {rules: UBL / rules}, documents, workdir, seconds=300)
    return {name: report for (name, _), report in zip(documents, found, strict=True)}


def messages(report: Report) -> list[Message]:
    assert report.svrl is not None, report.error
    return findings(report.svrl, "primary")[0]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_every_example_invoice_passes(reports: dict[str, Report], example: Path) -> None:
    errors = [m for m in messages(reports[example.name]) if m.severity == Severity.ERROR]
    assert errors == []


@pytest.mark.parametrize("case", UNIT_CASES, ids=lambda case: case.id)
def test_every_unit_case_fires_its_rule_as_expected(reports: dict[str, Report], case: UnitCase) -> None:
    # The fragments are incomplete invoices: other rules fire too, and only the one under test counts.
    fired = [m for m in messages(reports[f"{case.id}.xml"]) if m.code == case.rule]
    if case.expect == "success":
        assert fired == []
    elif case.count is None:
        assert fired
    else:
        assert len(fired) == case.count


def context(scratch: Path, document: Path, resources: dict[str, Path], rules: str) -> ValidationContext:
    data = document.read_bytes()
    ref = FileRef(
        name=document.name,
        role="primary",
        uri="gs://b/x",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    workdir = scratch / "work"
    workdir.mkdir()
    return ValidationContext(
        files=[InputFile(ref, document)],
        inputs={"rules": rules},
        workdir=workdir,
        timeout_seconds=60,
        deadline=time.monotonic() + 60,
        resources=resources,
    )


def test_an_invoice_through_the_validator() -> None:
    rules = RULE_FORMS["preprocessed-sch"]
    with scratch_directory() as scratch:
        result = SchematronValidator().validate(
            context(scratch, UBL / "examples" / "ubl-tc434-example1.xml", {rules: UBL / rules}, rules)
        )

    assert result.status == EnvelopeStatus.SUCCESS
    metrics = {m.name: m.value for m in result.metrics}
    assert metrics["failed_asserts"] == 0
    assert metrics["fired_rules"] > 100


def test_an_invoice_without_its_specification_identifier_fails_br_01() -> None:
    [case] = [c for c in UNIT_CASES if (c.rule, c.expect) == ("BR-01", "error")]
    rules = RULE_FORMS["preprocessed-sch"]
    with scratch_directory() as scratch:
        invoice = scratch / "inputs" / "invoice.xml"
        case.fragment.write(str(invoice))
        result = SchematronValidator().validate(context(scratch, invoice, {rules: UBL / rules}, rules))

    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    [finding] = [m for m in result.messages if m.code == "BR-01"]
    assert finding.severity == Severity.ERROR  # flag="fatal"
    assert finding.text == "[BR-01]-An Invoice shall have a Specification identifier (BT-24)."
    assert finding.location is not None
    assert finding.location.path == "/Q{urn:oasis:names:specification:ubl:schema:xsd:Invoice-2}Invoice[1]"


def test_the_code_list_patterns_are_included_from_the_resource_files() -> None:
    """A schema of the shipped layout's includes, reduced to the code lists (fast to transpile)."""
    main = etree.parse(str(UBL / "schematron" / "EN16931-UBL-validation.sch")).getroot()
    sch = main.nsmap[None]
    for include in main.findall(f"{{{sch}}}include"):
        if include.get("href") != "codelist/EN16931-UBL-codes.sch":
            main.remove(include)
    for phase in main.findall(f"{{{sch}}}phase"):
        main.remove(phase)
    with scratch_directory() as scratch:
        rules = scratch / "inputs" / "codes-only.sch"
        etree.ElementTree(main).write(str(rules))
        resources = {
            "schematron/codes-only.sch": rules,
            "schematron/codelist/EN16931-UBL-codes.sch": UBL / "schematron" / "codelist" / "EN16931-UBL-codes.sch",
        }
        cases = [c for c in UNIT_CASES if c.rule in ("BR-CL-01", "BR-CL-03")]
        workdir = scratch / "work"
        workdir.mkdir()
        reports = run_schematron(
            SchematronConfig(rules="schematron/codes-only.sch"),
            resources,
            [(f"{c.id}.xml", c.fragment) for c in cases],
            workdir,
            seconds=60,
        )

    fired = [len([m for m in messages(r) if m.code == c.rule]) for c, r in zip(cases, reports, strict=True)]
    expected = [0 if c.expect == "success" else c.count or 1 for c in cases]
    assert fired == expected
