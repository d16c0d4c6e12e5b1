"""The W3C SHACL core test suite, each test through the shacl validator.

Each test names a data graph and a shapes graph (often the test file itself) and the report a conforming engine
produces. The validator is held to the report's sh:conforms and its results (one finding each), by their constraint
components; the suite's own rule, isomorphic reports, asks for more than the findings carry.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from rdflib import RDF, SH, Graph, URIRef
from rdflib.namespace import Namespace

from jobs.validators.base import ConfigError, InputFile, ValidationContext
from jobs.validators.shacl import ShaclValidator
from schemas.envelopes import FileRef
from tests.support import CORPORA

SUITE = CORPORA / "shacl" / "tests" / "core"
MF = Namespace("http://www.w3.org/2001/sw/DataAccess/tests/test-manifest#")
SHT = Namespace("http://www.w3.org/ns/shacl-test#")
# A severity of the shapes' own making (misc/severity-002) has no rank in SHACL: the validator reports it as an ERROR.
SEVERITIES = defaultdict(lambda: "ERROR", {SH.Violation: "ERROR", SH.Warning: "WARNING", SH.Info: "INFO"})


@dataclass(frozen=True)
class Case:
    name: str  # the test's IRI relative to the suite: "node/class-001"
    data: str  # files by their path relative to the suite
    shapes: str
    conforms: bool
    # The expected results as findings: "shacl.MinCountConstraintComponent ERROR", in order.
    results: tuple[str, ...]


def _relative(iri: URIRef) -> str:
    return Path(iri.removeprefix("file://")).relative_to(SUITE).as_posix()


def read_suite() -> tuple[list[Case], set[str]]:
    """Every sht:Validate test the core manifest includes, read from its own file (the suite's IRIs are file URIs),
    and the included manifests that are not in the corpus."""
    cases = []
    absent = set()
    pending = [SUITE / "manifest.ttl"]
    while pending:
        path = pending.pop()
        if not path.is_file():
            absent.add(path.relative_to(SUITE).as_posix())
            continue
        graph = Graph().parse(path, format="turtle", publicID=path.as_uri())
        pending.extend(Path(str(included).removeprefix("file://")) for included in graph.objects(None, MF.include))
        for test in graph.subjects(RDF.type, SHT.Validate):
            action = graph.value(test, MF.action)
            report = graph.value(test, MF.result)
            cases.append(
                Case(
                    name=_relative(test),
                    data=_relative(graph.value(action, SHT.dataGraph)),
                    shapes=_relative(graph.value(action, SHT.shapesGraph)),
                    conforms=graph.value(report, SH.conforms).toPython(),
                    results=tuple(
                        sorted(
                            f"shacl.{graph.value(result, SH.sourceConstraintComponent).removeprefix(str(SH))} "
                            f"{SEVERITIES[graph.value(result, SH.resultSeverity)]}"
                            for result in graph.objects(report, SH.result)
                        )
                    ),
                )
            )
    return sorted(cases, key=lambda case: case.name), absent


CASES, ABSENT = read_suite()


@dataclass(frozen=True)
class KnownFailure:
    reason: str
    # What the validator reports instead (see outcome()): the list stays honest only while it still does so.
    outcome: str


# Tests the validator does not pass; each must still fail exactly this way.
KNOWN_FAILURES: dict[str, KnownFailure] = {}


def outcome(case: Case, tmp_path: Path) -> str:
    """'conforms', or 'violates: ' and the findings' codes and severities, or 'refused: ' and why the step could not
    run."""
    data = SUITE / case.data
    ref = FileRef(
        name=case.data, role="primary", uri=f"gs://b/{case.data}", size_bytes=data.stat().st_size, sha256="0" * 64
    )
    context = ValidationContext(
        files=[InputFile(ref, data)],
        inputs={"shapes": case.shapes},
        workdir=tmp_path,
        timeout_seconds=60,
        deadline=time.monotonic() + 60,
        resources={case.shapes: SUITE / case.shapes},
    )
    try:
        result = ShaclValidator().validate(context)
    except ConfigError as exc:
        return f"refused: {exc}"
    assert result.runtime_error is None
    metrics = {metric.name: metric.value for metric in result.metrics}
    assert metrics["violations"] + metrics["warnings"] + metrics["infos"] == len(result.messages)
    findings = ", ".join(sorted(f"{message.code} {message.severity}" for message in result.messages))
    if metrics["conforms"] == 1:
        return f"conforms with {findings}" if findings else "conforms"
    return f"violates: {findings}"


def expected(case: Case) -> str:
    return "conforms" if case.conforms else f"violates: {', '.join(case.results)}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_suite_case(case: Case, tmp_path: Path) -> None:
    found = outcome(case, tmp_path)
    known = KNOWN_FAILURES.get(case.name)
    if known is None:
        assert found == expected(case)
    else:
        assert found == known.outcome
        assert found != expected(case)


def test_the_suite_is_all_there() -> None:
    # A corpus gone missing would otherwise pass as an empty parametrization. The corpus lacks two folders its
    # SOURCES.md lists (property/, 42 test files, and targets/, 7): 53 of the suite's 98 tests are here.
    assert sorted(ABSENT) == ["property/manifest.ttl", "targets/manifest.ttl"]
    assert len(CASES) == 53


def test_at_least_nine_in_ten_pass() -> None:
    assert set(KNOWN_FAILURES) <= {case.name for case in CASES}
    assert len(KNOWN_FAILURES) <= len(CASES) // 10
